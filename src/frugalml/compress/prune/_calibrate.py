"""Structured pruning that looks at data: `importance: activation` ranks channels by what they
contribute to their consumers' outputs, `reconstruct` refits the layers that lost inputs so their
outputs match the unpruned model's again, and `importance: taylor` accumulates the gradients its
scores need. All read a few training batches (calibration).

- Output contribution (Wanda-sp; Sun et al. 2024, An et al. 2024): a channel i feeding a Linear or
  convolution W adds W[:, i] x_i to its output, whose size over the calibration data is
  ||W[:, i]||_2 * ||x_i||_2. Weight magnitude alone (l1/l2) misses that a channel with large weights
  can be nearly always zero (after a GELU), and vice versa: on all-MiniLM-L6-v2 with 25% of heads and
  FFN neurons removed, the embeddings' cosine to the unpruned model before any fine-tuning is 0.70
  with l1 and 0.83 with this score (BENCHMARKS.md).
- Reconstruction (the least-squares "mask tuning" of Kwon et al. 2022, layer by layer as in
  SparseGPT/OBC): each Linear whose inputs were pruned but whose outputs were not (a transformer's
  attention output projection and FFN output, an MLP's last layer) gets the weights and bias that best
  map its now narrower inputs to the unpruned model's outputs of the same layer, ridge-regularized,
  solved in float64. Layers are refitted in the order the model registers them, each on inputs that
  already pass through the refitted layers before it, so errors do not pile up. Padding tokens (a
  batch's attention_mask) are left out of both.
- Residual correction: where the layer is the projection of a post-norm residual block (its parent
  holds only it, a LayerNorm and dropout, and is called as `parent(hidden, residual)`: BERT's
  SelfOutput and Output, RoBERTa's, MiniLM's), the parent computes LayerNorm(layer(hidden) + residual),
  and the residual reaching it in the pruned model already differs from the unpruned one's. The target
  is then the unpruned output plus that difference (reference residual - pruned residual), so the
  refit also cancels the error of the layers before it: on all-MiniLM-L6-v2 at 25%, cosine 0.926 ->
  0.933 before fine-tuning (benchmarks/prune_start_quality.py, BENCHMARKS.md). That the block computes
  exactly this is checked on one calibration batch first (`computes_post_norm`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp
from torch_pruning.pruner import function

from frugalml.data.features import Features
from frugalml.errors import ConfigError
from frugalml.train.evaluate import eval_mode

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
RIDGE = 1e-2  # times the mean diagonal of X^T X: keeps the solve stable for channels that are rarely on


def calibration_batches(data: Any, batches: int, seed: int, batch_size: int = 32) -> list[Any]:
    """`batches` shuffled training inputs; token batches cut to their longest row."""
    out = []
    for i, (x, _) in enumerate(data.loader("train", batch_size=batch_size, shuffle=True, seed=seed)):
        if i >= batches:
            break
        out.append(x.trimmed() if isinstance(x, Features) else x)
    return out


def _rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A Linear layer's input as (rows, features); padding tokens dropped when the mask fits."""
    if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
        return x[mask.bool()]
    return x.reshape(-1, x.shape[-1])


def _mask(x: Any) -> torch.Tensor | None:
    return x.get("attention_mask") if isinstance(x, Features) else None


def input_norms(model: nn.Module, batches: list[Any]) -> dict[nn.Module, torch.Tensor]:
    """Sum of squares of every Linear's and convolution's inputs, per input channel."""
    sq: dict[nn.Module, torch.Tensor] = {}
    mask: list[torch.Tensor | None] = [None]

    def hook(m: nn.Module, inp: tuple, _out: Any) -> None:
        x = inp[0].detach().double()
        s = _rows(x, mask[0]).pow(2).sum(0) if isinstance(m, nn.Linear) else \
            x.pow(2).sum(dim=[d for d in range(x.dim()) if d != 1])
        sq[m] = sq[m] + s if m in sq else s

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, *_CONV))]
    device = next(model.parameters()).device
    try:
        with eval_mode(model), torch.no_grad():
            for x in batches:
                mask[0] = _mask(x)
                model(x.to(device))
    finally:
        for h in hooks:
            h.remove()
    return {m: v.float() for m, v in sq.items()}


def _column_norms(layer: nn.Module) -> torch.Tensor:
    """||W[:, i]||_2 for every input channel i (a grouped conv's channel only feeds its own group)."""
    w = layer.weight.detach()
    if isinstance(layer, nn.Linear):
        return w.pow(2).sum(0).sqrt()
    g = layer.groups
    per_group = w.reshape(g, w.shape[0] // g, w.shape[1], -1)  # (groups, out/group, in/group, k)
    return per_group.pow(2).sum(dim=(1, 3)).reshape(-1).sqrt()


class OutputContribution(tp.importance.GroupMagnitudeImportance):
    """Channel i of a group scores the mean over the group's consumer layers of ||W[:, i]|| * ||x_i||
    on the calibration data (`norms`, filled before each pruning step). A group with a channel that no
    measured Linear or convolution reads (or whose channels never fire) falls back to L2 magnitude."""

    def __init__(self) -> None:
        super().__init__(p=2, group_reduction="mean", normalizer="mean")
        self.norms: dict[nn.Module, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        n = len(group[0].idxs)  # the root's channels; a consumer may see each several times (flatten)
        total = torch.zeros(n, dtype=torch.float64)
        seen = torch.zeros(n, dtype=torch.float64)
        for item in group:
            layer, fn = item.dep.layer, item.dep.pruning_fn
            if fn not in (function.prune_linear_in_channels, function.prune_conv_in_channels):
                continue
            sq = self.norms.get(layer)
            if sq is None or any(r is None for r in item.root_idxs):
                continue
            score = (_column_norms(layer) * sq.to(layer.weight.device).sqrt())[item.idxs]
            root = torch.as_tensor(item.root_idxs, dtype=torch.long)
            total.scatter_add_(0, root, score.double().cpu())
            seen.scatter_add_(0, root, torch.ones(len(root), dtype=torch.float64))
        if not bool((seen > 0).all()) or float(total.sum()) <= 0:  # a channel nothing measured reads
            return super().__call__(group)
        return self._normalize((total / seen).float(), self.normalizer)


def activation_stats(scorer: Any, model: nn.Module, batches: list[Any]) -> Callable[[], None]:
    """Before each pruning step: measure the current model's inputs for `scorer` (an OutputContribution,
    possibly wrapped)."""
    inner = getattr(scorer, "inner", scorer)

    def run() -> None:
        inner.norms = input_norms(model, batches)

    return run


class _Stop(BaseException):
    """Raised by a capture hook: nothing after the layer is needed (a BaseException, so a forward that
    catches Exception does not swallow it)."""


def _run_hooked(model: nn.Module, x: Any, hooks: list[Any]) -> None:
    """`model(x)` until a hook raises _Stop (or to the end); the hooks removed afterwards."""
    try:
        model(x)
    except _Stop:
        pass
    finally:
        for h in hooks:
            h.remove()


def residual_block(model: nn.Module, name: str) -> nn.Module | None:
    """The parent of Linear layer `name` when it looks like a post-norm residual projection block (the
    layer, one LayerNorm, dropout, nothing else), else None; `computes_post_norm` checks it on data."""
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else None
    if parent is None or type(getattr(parent, leaf, None)) is not nn.Linear:
        return None
    kinds = [type(c) for c in parent.children()]
    ok = kinds.count(nn.LayerNorm) == 1 and kinds.count(nn.Linear) == 1 and \
        all(k in (nn.Linear, nn.LayerNorm, nn.Dropout) for k in kinds)
    return parent if ok else None


@torch.no_grad()
def computes_post_norm(model: nn.Module, block: nn.Module, layer: nn.Linear, x: Any) -> bool:
    """Whether `block`, in `model`'s forward on `x` (eval mode), returns LayerNorm(layer(hidden) + its
    second argument): only then is that argument a residual the refit target may correct for."""
    seen: dict[str, torch.Tensor] = {}
    norm = next(c for c in block.children() if isinstance(c, nn.LayerNorm))

    def pre(_m: nn.Module, args: tuple) -> None:
        if len(args) > 1 and torch.is_tensor(args[1]):
            seen.setdefault("residual", args[1])

    def out(key: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inp: tuple, y: Any) -> None:
            seen.setdefault(key, y)
            if key == "block":
                raise _Stop
        return hook

    _run_hooked(model, x, [block.register_forward_pre_hook(pre), layer.register_forward_hook(out("layer")),
                           block.register_forward_hook(out("block"))])
    if not {"residual", "layer", "block"} <= set(seen) or not torch.is_tensor(seen["block"]) or \
            seen["residual"].shape != seen["layer"].shape:
        return False
    expected = norm(seen["layer"] + seen["residual"])
    return expected.shape == seen["block"].shape and torch.allclose(expected, seen["block"], rtol=1e-4, atol=1e-4)


@torch.no_grad()
def _captured(model: nn.Module, layer: nn.Module, x: Any, want: str,
              block: nn.Module | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """`layer`'s input ("in") or output ("out") as float64 rows of real tokens, the forward stopped
    right after it (None when the forward never calls it; a layer called twice is seen at its first
    call); and, with `block`, the residual tensor `block` was called with (its second argument)."""
    got: list[torch.Tensor] = []
    residual: list[torch.Tensor] = []
    mask = _mask(x)

    def pre(_m: nn.Module, args: tuple) -> None:
        if len(args) > 1 and torch.is_tensor(args[1]) and not residual:
            residual.append(_rows(args[1].detach().double(), mask))

    def hook(_m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        got.append(_rows((inp[0] if want == "in" else out).detach().double(), mask))
        raise _Stop

    hooks = [layer.register_forward_hook(hook)] + ([block.register_forward_pre_hook(pre)] if block else [])
    _run_hooked(model, x, hooks)
    return (got[0] if got else None), (residual[0] if residual else None)


def refittable(pruned: nn.Module, reference: nn.Module) -> list[str]:
    """Linear layers that lost inputs and kept every output, in registration order."""
    ref = dict(reference.named_modules())
    return [n for n, m in pruned.named_modules() if isinstance(m, nn.Linear) and isinstance(ref.get(n), nn.Linear)
            and m.in_features < ref[n].in_features and m.out_features == ref[n].out_features]


@torch.no_grad()
def refit(layer: nn.Linear, reference_layer: nn.Linear, pruned: nn.Module, reference: nn.Module,
          batches: list[Any], ridge: float = RIDGE, blocks: tuple[nn.Module, nn.Module] | None = None,
          ) -> dict[str, Any]:
    """Least-squares weights for `layer` (in `pruned`) that map its inputs to `reference_layer`'s
    outputs (in `reference`) on the same batches; returns the mean squared error before and after.
    With `blocks` (the layer's residual block in `pruned` and in `reference`), the target also makes
    up for the difference between the residuals the two blocks receive."""
    device = layer.weight.device
    bias = layer.bias is not None  # a layer without a bias stays without one (its artifact must still load)
    n = layer.in_features + bias
    gram = torch.zeros(n, n, dtype=torch.float64, device=device)
    cross = torch.zeros(n, layer.out_features, dtype=torch.float64, device=device)
    w0 = layer.weight.double().T
    w0 = torch.cat([w0, layer.bias.double()[None]]) if bias else w0
    before = y_sq = 0.0
    rows = 0
    for x in batches:
        x = x.to(device)
        xs, res = _captured(pruned, layer, x, "in", blocks[0] if blocks else None)
        ys, ref_res = _captured(reference, reference_layer, x, "out", blocks[1] if blocks else None)
        if xs is None or ys is None:  # the forward never calls the layer (a fused fast path reads its weights)
            return {"rows": 0, "refitted": False, "reason": "the forward does not call this layer"}
        if blocks is not None:
            if res is None or ref_res is None or not res.shape == ref_res.shape == ys.shape:
                return refit(layer, reference_layer, pruned, reference, batches, ridge) | \
                    {"residual": False, "residual_reason": "a batch reached the block without a matching residual"}
            ys = ys + (ref_res - res)
        xa = torch.cat([xs, torch.ones(len(xs), 1, dtype=torch.float64, device=device)], 1) if bias else xs
        gram += xa.T @ xa
        cross += xa.T @ ys
        before += float((xa @ w0 - ys).pow(2).sum())
        y_sq += float(ys.pow(2).sum())
        rows += len(xa)
    eye = torch.eye(layer.in_features, dtype=torch.float64, device=device)
    reg = ridge * gram.diagonal()[: layer.in_features].mean().clamp_min(1e-12)
    gram[: layer.in_features, : layer.in_features] += reg * eye
    w = torch.linalg.solve(gram, cross)
    # ||XW - Y||^2 = tr(W^T G W) - 2 tr(W^T C) + ||Y||^2, from the sums (without the ridge term)
    gram[: layer.in_features, : layer.in_features] -= reg * eye
    after = float((w * (gram @ w)).sum() - 2 * (w * cross).sum()) + y_sq
    width = layer.out_features * max(rows, 1)
    extra = {"residual": True} if blocks is not None else {}
    if after >= before:  # never worse on the calibration data
        return {"rows": rows, "mse_before": before / width, "mse_after": before / width, "refitted": False} | extra
    layer.weight.copy_(w[: layer.in_features].T.to(layer.weight.dtype))
    if bias:
        layer.bias.copy_(w[-1].to(layer.bias.dtype))
    return {"rows": rows, "mse_before": before / width, "mse_after": max(after, 0.0) / width,
            "refitted": True} | extra


def reconstruct(pruned: nn.Module, reference: nn.Module, batches: list[Any]) -> dict[str, dict[str, Any]]:
    """Refit every `refittable` layer of `pruned` to `reference`, in order; per layer its rows (tokens
    or samples) and mean squared error to its target before and after (the target of a residual
    block's layer includes the residual correction, so it also counts the error of earlier layers)."""
    ref = dict(reference.named_modules())
    mods = dict(pruned.named_modules())
    report = {}
    with eval_mode(pruned), eval_mode(reference):
        for name in refittable(pruned, reference):
            block, ref_block = residual_block(pruned, name), residual_block(reference, name)
            post_norm = block is not None and ref_block is not None and bool(batches) and \
                computes_post_norm(reference, ref_block, ref[name], batches[0].to(mods[name].weight.device))
            blocks = (block, ref_block) if post_norm else None
            stats = refit(mods[name], ref[name], pruned, reference, batches, blocks=blocks)
            report[name] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in stats.items()}
    return report


ZERO_LOSS = 1e-6  # below this the loss is rounding noise (1 - cosine of a model to its own outputs: ~1e-8)


def taylor_grads(model: nn.Module, data: Any, batches: int, seed: int) -> Callable[[], None]:
    """First-order Taylor importance needs dL/dw: accumulate a few training batches (eval mode, so
    BN statistics are untouched)."""

    from frugalml.measure.task import task_of

    task = task_of(data)  # the data's own objective: cross-entropy, 1 - cosine to the reference, MSE

    def run() -> None:
        losses: list[float] = []
        model.zero_grad(set_to_none=True)
        was_training = model.training
        model.eval()
        try:
            loader = data.loader("train", batch_size=64, shuffle=True, seed=seed)
            for i, (x, y) in enumerate(loader):
                if i >= batches:
                    break
                loss = task.loss(model(x), y)
                loss.backward()
                losses.append(float(loss.detach()))
        finally:
            model.train(was_training)
        if losses and max(losses) < ZERO_LOSS:
            raise ConfigError(
                f"importance: taylor needs a loss with a gradient at this model, and the {task.name} task's loss "
                f"is {max(losses):.1g} here (its targets are this model's own outputs); use importance: l1 or l2"
            )

    return run
