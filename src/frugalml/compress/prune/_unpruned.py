"""Which prunable layers structured pruning left alone, and why: the stage's `left_unpruned`
metric. Layers kept by configuration carry the reason they were kept with; for a group Torch-Pruning
was offered and pruned nothing of, tp's rules are replayed in its order to name the one that held;
the remaining layers are coupled to a kept one (tp drops a group that contains a kept layer)."""

from __future__ import annotations

from typing import Any

import torch

from frugalml.compress.prune._tp_pruner import ROOT_TYPES, StructuredPruner, layer_shapes, out_items, quiet


def left_unpruned(sp: StructuredPruner, before: dict[str, int]) -> dict[str, str]:
    """Every prunable layer whose width is what it was in `before` (see layer_shapes), and why."""
    after = layer_shapes(sp.model)
    order = {n: i for i, (n, _) in enumerate(sp.model.named_modules())}
    unchanged = {n for n, m in sp.model.named_modules()
                 if isinstance(m, ROOT_TYPES) and n in before and before[n] == after.get(n)}
    out = {n: r for n, r in sp.kept.items() if n in unchanged}
    with quiet():
        for group in sp.groups():
            members = [sp.name_of(i.dep.target.module) for i in out_items(group)]
            if members and all(m in unchanged for m in members):
                reason = _why_skipped(sp, group)
                out.update({m: reason for m in members if m not in out})
        for n in sorted(unchanged - set(out), key=order.get):
            out[n] = _coupling(sp, n)
    return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], 0)))


def _why_skipped(sp: StructuredPruner, group: Any) -> str:
    """Why tp, offered this group, pruned nothing of it (its rules, in the order it applies them)."""
    dg, root = sp.pruner.DG, group[0].dep.target.module
    if not sp.pruner._check_pruning_ratio(group):
        return "a layer of its group has one channel left (or reached max_layer_ratio)"
    imp = sp.pruner.estimate_importance(group)
    if imp is None:
        extra = " (bn_scale scores BatchNorm weights and no BatchNorm follows it)" if sp.importance == "bn_scale" else ""
        return f"the {sp.importance} importance gives its group no score{extra}"
    channels = dg.get_out_channels(root)
    ratio = sp.pruner.get_target_pruning_ratio(root)
    n = channels - int(channels * (1 - ratio))
    if n < 1:
        return f"ratio {ratio:.3g} removes no channel of its {channels}"
    idxs = torch.argsort(imp)[:n].tolist()
    for dep, ix in dg.get_pruning_group(root, group[0].dep.handler, idxs):
        if getattr(dep.handler, "__name__", "") == "prune_out_channels":
            width = dg.get_out_channels(dep.target.module)
            if width is not None and width <= len(ix):
                return (f"its {n} lowest-scored channels are all {width} of {sp.name_of(dep.target.module)!r}; "
                        "Torch-Pruning skips a group rather than empty a layer")
    return "Torch-Pruning skipped its group"


def _coupling(sp: StructuredPruner, name: str) -> str:
    """A layer in no prunable group: tp dropped its group because a kept layer is in it."""
    dg, module = sp.pruner.DG, sp.model.get_submodule(name)
    pruner = dg.get_pruner_of_module(module)
    if pruner is None or pruner.get_out_channels(module) is None:
        return "Torch-Pruning has no pruner for this layer type"
    group = dg.get_pruning_group(module, pruner.prune_out_channels, list(range(pruner.get_out_channels(module))))
    partners = [n for n in dict.fromkeys(sp.name_of(i.dep.target.module) for i in out_items(group)) if n in sp.kept]
    if partners:
        return (f"coupled to {', '.join(repr(p) for p in partners)} (residual add, concat or shared input), "
                "which is kept")
    return "Torch-Pruning found no group to prune it in"
