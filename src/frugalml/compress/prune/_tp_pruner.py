"""Our wrapper over Torch-Pruning (tp): one tp.pruner.BasePruner with frugalml's defaults, checks
that name the layer when tp would fail, a trial forward after each pruned group, and the list of
prunable layers left alone and why (`left_unpruned`).

Why each piece exists:
- tp builds a group per coupled set of layers (residual adds, concats, depthwise convs, BN,
  flatten->Linear) and prunes it whole. It silently skips a group when the chosen channels would
  empty one of its layers: with L1 scores a concat of a 3x3 conv and a 1x1 conv ranks every 1x1
  channel below the 3x3 ones (an L1 row norm grows with sqrt(fan-in)), so half the channels of
  such a group are all the 1x1 branch and the whole group stayed unpruned. `BranchBalanced`
  scores each concat branch relative to itself.
- tp traces shapes, not Python: a forward that reshapes with a constant (`x.view(-1, 320)`) traces
  fine and breaks once the channels before it shrink. `step` runs the model after each group and
  raises `BlockedGroup` naming it; the caller starts over with that group left alone.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp

from frugalml.compress.prune._calibrate import OutputContribution
from frugalml.compress.prune._layers import check_layer_names, classifier, selected
from frugalml.compress.prune._tp_rnn import RNNHiddenPruner, supported
from frugalml.data.features import Features
from frugalml.errors import ConfigError, UnsupportedError

ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.RNN, nn.GRU, nn.LSTM)
_RNN_PRUNERS = {nn.RNN: RNNHiddenPruner(), nn.GRU: RNNHiddenPruner(), nn.LSTM: RNNHiddenPruner()}
_TP_ERRORS = (IndexError, RuntimeError, ValueError, AssertionError, TypeError)
OFF_PATH = "off the traced forward path (its output never reaches the model's output): left as it is"
# tp keeps int(channels * (1 - ratio)) channels: 10 * (1 - 0.9) = 0.99999... keeps none, so the
# group is skipped. Ratios handed to tp are this much smaller, which changes no exact product.
_EPS = 1e-9
_IMPORTANCE: dict[str, Callable[[], tp.importance.Importance]] = {
    "l1": lambda: tp.importance.MagnitudeImportance(p=1),
    "l2": lambda: tp.importance.MagnitudeImportance(p=2),
    "bn_scale": tp.importance.BNScaleImportance,
    "taylor": tp.importance.TaylorImportance,
    "random": tp.importance.RandomImportance,
    "activation": OutputContribution,  # its activation norms are measured before each step
}


class BlockedGroup(Exception):
    """Pruning the group rooted at `layer` broke the model; the caller retries without it."""

    def __init__(self, layer: str, reason: str) -> None:
        super().__init__(f"{layer}: {reason}")
        self.layer, self.reason = layer, reason


def out_items(group: Any) -> Iterator[Any]:
    """The group's items that remove output channels of a prunable layer."""
    for item in group:
        dep = item.dep
        if isinstance(dep.target.module, ROOT_TYPES) and getattr(dep.handler, "__name__", "") == "prune_out_channels":
            yield item


class BranchBalanced(tp.importance.Importance):
    """Scores each concat branch of a group relative to its own mean, and never ranks a branch's
    strongest channel among the weakest, so no branch is emptied (tp would then skip the group)."""

    def __init__(self, inner: tp.importance.Importance) -> None:
        self.inner = inner

    def __call__(self, group: Any) -> torch.Tensor | None:
        imp = self.inner(group)
        if imp is None:
            return None
        branches = {tuple(sorted(set(i.root_idxs))) for i in out_items(group)
                    if i.root_idxs is not None and None not in i.root_idxs}
        branches = [list(b) for b in branches if 0 < len(b) < len(imp)]
        if len(branches) < 2:
            return imp
        imp = imp.clone().float()
        for idxs in branches:
            imp[idxs] = imp[idxs] / imp[idxs].abs().mean().clamp_min(1e-12)
        top = imp.max() + 1
        for idxs in branches:
            imp[idxs[int(torch.argmax(imp[idxs]))]] = top
        return imp


def make_importance(name: str, model: nn.Module) -> tp.importance.Importance:
    if name == "bn_scale" and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise ConfigError("prune.importance: bn_scale needs BatchNorm layers and this model has none; "
                          "allowed here: l1, l2, taylor, random, activation")
    return BranchBalanced(_IMPORTANCE[name]())


@contextmanager
def quiet() -> Iterator[None]:
    # tp warns about unwrapped parameters (cls token, position embedding) it handles correctly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def layer_shapes(model: nn.Module) -> dict[str, int]:
    """Output width of every prunable layer (channels, features, hidden units, heads)."""
    out = {}
    for name, m in model.named_modules():
        for attr in ("out_channels", "out_features", "hidden_size", "num_heads", "num_attention_heads"):
            if isinstance(getattr(m, attr, None), int):
                out[f"{name}.{attr}" if attr.startswith("num_") else name] = getattr(m, attr)
                break
    return out


class StructuredPruner:
    """Wraps one tp.pruner.BasePruner over the model, with our defaults and checks. Layers named in
    `blocked` (layer -> reason) are left alone, like `ignore`. `check_ratio`: fail early when
    `ratio` would empty a layer (off for budgets, where the ratio is only an upper bound)."""

    def __init__(
        self,
        model: nn.Module,
        example: torch.Tensor,
        *,
        num_classes: int,
        importance: str,
        ratio: float,
        iterative_steps: int,
        max_layer_ratio: float,
        ignore: list[str],
        targets: list[str] | None,
        ratio_by_layer: dict[str, float] | None = None,
        round_to: int | None = None,
        blocked: Mapping[str, str] | None = None,
        check_ratio: bool = True,
    ) -> None:
        from frugalml.models import pruning_hints, sync_after_pruning

        self.model, self.sync, self.importance = model, sync_after_pruning, importance
        # an odd batch exposes reshapes that fold the batch
        self.trial = Features.cat([example, example[:1]]) if isinstance(example, Features) else \
            torch.cat([example, example[:1]])
        self.num_classes = num_classes
        problem = self._trial_forward()
        if problem:
            raise UnsupportedError(f"structured pruning needs a model that maps a batch to class scores; "
                                   f"before pruning, {problem}")
        check_layer_names(model, list(ratio_by_layer or {}), "sensitivity_table")
        self.ratio_by_layer = ratio_by_layer or {}
        self.head_name, head = classifier(model, num_classes)
        hints = pruning_hints(model)
        self.kept = self._kept_layers(model, head, hints["ignored_layers"], ignore, targets, blocked or {})
        by_name = dict(model.named_modules())
        self.num_heads = dict(hints["num_heads"])
        self.initial_heads = dict(self.num_heads)
        self.scorer = scorer = make_importance(importance, model)
        was_training = model.training
        try:
            with quiet():
                self.pruner = tp.pruner.BasePruner(
                    model, dict(example) if isinstance(example, Features) else example,  # named inputs: model(**x)
                    importance=scorer,
                    pruning_ratio=max(0.0, ratio - _EPS),
                    pruning_ratio_dict={by_name[n]: max(0.0, r - _EPS) for n, r in self.ratio_by_layer.items()} or None,
                    max_pruning_ratio=max_layer_ratio - _EPS,
                    iterative_steps=iterative_steps,
                    round_to=round_to,
                    ignored_layers=[by_name[n] for n in self.kept],
                    num_heads=self.num_heads,
                    prune_num_heads=bool(self.num_heads),
                    prune_head_dims=False,
                    customized_pruners=_RNN_PRUNERS,
                    in_channel_groups={},  # tp's defaults are shared mutable dicts
                    out_channel_groups={},
                    root_module_types=list(ROOT_TYPES),
                )
        except Exception as e:  # tp raises bare errors from deep inside its tracer
            raise UnsupportedError(
                f"Torch-Pruning cannot trace this model ({type(e).__name__}: {e}); "
                "list the offending layers in prune.ignore or use method: unstructured"
            ) from None
        finally:
            model.train(was_training)
        self.total_steps = iterative_steps
        self.off_path = self._off_path()
        self.kept.update({n: OFF_PATH for n in self.off_path if n not in self.kept})
        with quiet():
            self._check_groups_map()
            if check_ratio:
                self._check_not_emptied(ratio, max_layer_ratio)

    @staticmethod
    def _kept_layers(model: nn.Module, head: nn.Module, hinted: list[nn.Module], ignore: list[str],
                     targets: list[str] | None, blocked: Mapping[str, str]) -> dict[str, str]:
        """Layers tp must leave alone (its `ignored_layers`), each with the reason."""
        names = {m: n for n, m in model.named_modules()}
        kept = {names[head]: "the classifier: its outputs are the class scores"}
        for m in hinted:
            if isinstance(m, nn.RNNBase):
                if not supported(m):
                    kept[names[m]] = "bidirectional or projected recurrent layer: its hidden units are not prunable"
            else:
                kept[names[m]] = "the model keeps its width (pruning_ignored_layers)"
        for m, n in names.items():
            if isinstance(m, ROOT_TYPES) and n not in kept and not selected(n, targets, ignore):
                kept[n] = "named in prune.ignore" if selected(n, targets, []) else "not in prune.targets"
        kept.update(blocked)
        return kept

    def _off_path(self) -> list[str]:
        """Prunable layers Torch-Pruning's trace never reached (e.g. a pooler whose output the model
        does not return): nothing is pruned in them and they are reported, not guessed at."""
        traced = set(self.pruner.DG.module2node)
        return [n for n, m in self.model.named_modules() if isinstance(m, ROOT_TYPES) and m not in traced]

    def groups(self) -> Iterator[Any]:
        return self.pruner.DG.get_all_groups(ignored_layers=self.pruner.ignored_layers, root_module_types=ROOT_TYPES)

    def name_of(self, module: nn.Module) -> str:
        return self.pruner.DG._module2name.get(module, type(module).__name__)

    def _check_groups_map(self) -> None:
        """Score every group once: a group whose channel indices tp mis-maps (e.g. attention split by
        indexing instead of unbind) fails here, before anything is cut, and is named."""
        probe = tp.importance.MagnitudeImportance(p=1)
        bad: list[str] = []
        error = ""
        for group in self.groups():
            try:
                probe(group)
            except _TP_ERRORS as e:
                bad.append(self.name_of(group[0].dep.target.module))
                error = error or f"{type(e).__name__}: {e}"
        if bad:
            raise UnsupportedError(
                f"Torch-Pruning cannot map the channels of layer(s) {', '.join(repr(b) for b in bad)} "
                f"({error}); add them to prune.ignore or use method: unstructured"
            )

    def _check_not_emptied(self, ratio: float, max_layer_ratio: float) -> None:
        """A layer must keep at least one channel; say which one would not."""
        dg, round_to = self.pruner.DG, self.pruner.round_to
        for group in self.groups():
            root = group[0].dep.target.module
            channels = dg.get_out_channels(root) // max(1, self.pruner._get_channel_groups(group))
            name = self.name_of(root)
            r = min(self.ratio_by_layer.get(name, ratio), max_layer_ratio)
            kept = int(channels * (1 - r + _EPS))
            if round_to:
                kept -= kept % round_to
            if channels and kept < 1:
                rounding = f" (rounded down to a multiple of round_to={round_to})" if round_to else ""
                raise ConfigError(
                    f"prune: ratio {r} would remove every one of the {channels} channels of layer {name!r}"
                    f"{rounding}; lower the ratio/max_layer_ratio or add {name!r} to prune.ignore"
                )

    @property
    def exhausted(self) -> bool:
        return self.pruner.current_step >= self.total_steps

    def step(self, before_step: Callable[[], None] | None = None) -> None:
        """One tp step, group by group, running the model after each. Heads get their own per-layer
        target first: tp would apply the head ratio to the heads left after earlier steps
        (compounding), and it ceil()s ratio * heads."""
        if self.exhausted:
            return
        nxt = self.pruner.current_step + 1
        for qkv, h0 in self.initial_heads.items():
            ratio = self.pruner.get_target_pruning_ratio(qkv, step=nxt)
            now = self.pruner.num_heads[qkv]
            remove = max(0, now - max(1, math.ceil(h0 * (1 - ratio) - 1e-6)))
            self.pruner.head_pruning_ratio_dict[qkv] = [(remove - 0.5) / now if remove else 0.0] * (self.total_steps + 1)
        if before_step is not None:
            before_step()
        was_training = self.model.training
        self.model.eval()
        try:
            with quiet():
                for group in self.pruner.step(interactive=True):
                    self._prune_group(group)
        except _TP_ERRORS as e:
            raise UnsupportedError(f"Torch-Pruning failed to prune this model ({type(e).__name__}: {e}); "
                                   "list the offending layers in prune.ignore or use method: unstructured") from None
        finally:
            self.model.train(was_training)
        self.model.zero_grad(set_to_none=True)

    def _prune_group(self, group: Any) -> None:
        name = self.name_of(group[0].dep.target.module)
        try:
            group.prune()
        except _TP_ERRORS as e:
            raise BlockedGroup(name, f"Torch-Pruning failed on it ({type(e).__name__}: {e})") from None
        self.sync(self.model, self.pruner.num_heads)
        problem = self._trial_forward()
        if problem:
            raise BlockedGroup(name, f"pruning it breaks the forward pass ({problem}); "
                                     "a fixed reshape such as x.view(-1, N) in forward?")

    def _trial_forward(self) -> str:
        """'' when the model maps the trial batch to (batch, classes) scores, else what went wrong."""
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model(self.trial)
        except Exception as e:  # whatever the user's forward raises
            return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        finally:
            self.model.train(was_training)
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return "" if shape == (len(self.trial), self.num_classes) else f"the output is {shape}, not (batch, classes)"
