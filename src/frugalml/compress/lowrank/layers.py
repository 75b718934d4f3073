"""Low-rank factorized layers, the truncated-SVD math that fills them, and how artifacts rebuild them.

- `LowRankLinear`: an (out x in) Linear as `in -> rank -> out` (SVD of the weight).
- `LowRankConv2d`: a k x k conv as a k x k conv to `rank` channels + a 1x1 conv (SVD of the weight
  reshaped to out x (in*k*k)); exact at rank min(out, in*k*k).
- `Tucker2Conv2d`: 1x1 conv in -> r_in, k x k core r_in -> r_out, 1x1 conv r_out -> out (Tucker-2 by
  truncated HOSVD of the kernel's two channel modes); exact at (in, out).

Each factorized layer is a container of plain nn.Linear / nn.Conv2d, so measurement, export and
Torch-Pruning see ordinary layers. The model's ModelSpec records the plan under `"lowrank"`
(`{layer name: {"kind": ..., "rank": r}}`); `frugalml.artifact.build_from_spec` rebuilds the model
by building the spec's architecture and calling `apply_spec`, which replaces those layers with empty
factorized ones, so every artifact format (fp32, sparse, quantized) loads factorized models.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from frugalml.errors import ArtifactError

SPEC_KEY = "lowrank"


class LowRankLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @torch.no_grad()
    def dense_weight(self) -> torch.Tensor:
        """The dense weight this factorization computes (for error checks)."""
        return self.second.weight @ self.first.weight


def _conv(conv: nn.Conv2d, cin: int, cout: int, bias: bool, spatial: bool) -> nn.Conv2d:
    """A conv with `conv`'s geometry (spatial) or a 1x1 one, between the given channel counts."""
    if not spatial:
        return nn.Conv2d(cin, cout, 1, bias=bias)
    return nn.Conv2d(cin, cout, conv.kernel_size, stride=conv.stride, padding=conv.padding,  # type: ignore[arg-type]
                     dilation=conv.dilation, bias=bias, padding_mode=conv.padding_mode)


class LowRankConv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d, rank: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.rank = conv.in_channels, conv.out_channels, rank
        self.first = _conv(conv, conv.in_channels, rank, bias=False, spatial=True)
        self.second = _conv(conv, rank, conv.out_channels, bias=conv.bias is not None, spatial=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @torch.no_grad()
    def dense_weight(self) -> torch.Tensor:
        """The dense weight this factorization computes (for error checks)."""
        w1 = self.first.weight
        return (self.second.weight.flatten(1) @ w1.flatten(1)).reshape(self.out_channels, *w1.shape[1:])


class Tucker2Conv2d(nn.Module):
    def __init__(self, conv: nn.Conv2d, rank_in: int, rank_out: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.rank_in, self.rank_out = rank_in, rank_out
        self.first = _conv(conv, conv.in_channels, rank_in, bias=False, spatial=False)
        self.core = _conv(conv, rank_in, rank_out, bias=False, spatial=True)
        self.last = _conv(conv, rank_out, conv.out_channels, bias=conv.bias is not None, spatial=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.core(self.first(x)))

    @torch.no_grad()
    def dense_weight(self) -> torch.Tensor:
        """The dense weight this factorization computes (for error checks)."""
        u_out, u_in = self.last.weight.flatten(1), self.first.weight.flatten(1)  # (O, r_o), (r_i, I)
        return torch.einsum("or,rskl,si->oikl", u_out, self.core.weight, u_in)


FACTORIZED = (LowRankLinear, LowRankConv2d, Tucker2Conv2d)
Factorizable = nn.Linear | nn.Conv2d


def kind_of(layer: nn.Module, conv: str) -> str | None:
    """How `layer` would be factorized ("linear", "conv-svd", "tucker2"), or None if it cannot be."""
    if isinstance(layer, nn.Linear):
        return "linear"
    if isinstance(layer, nn.Conv2d) and layer.groups == 1 and conv != "none":
        return "tucker2" if conv == "tucker2" else "conv-svd"
    return None


def full_rank(layer: Factorizable, kind: str) -> list[int]:
    """The ranks at which the factorization is exact: [r] for SVD, [r_in, r_out] for Tucker-2."""
    w = layer.weight
    if kind == "tucker2":
        return [w.shape[1], w.shape[0]]
    return [min(w.shape[0], w[0].numel())]


def unfoldings(layer: Factorizable, kind: str) -> list[torch.Tensor]:
    """The matrices whose singular values set the ranks (one per rank of `full_rank`)."""
    w = layer.weight.detach().float()
    if kind == "tucker2":
        return [w.transpose(0, 1).flatten(1), w.flatten(1)]  # input-channel mode, output-channel mode
    return [w.flatten(1)]


def rank_for(s: torch.Tensor, ratio: float | None, energy: float | None) -> int:
    """Rank keeping `ratio` of the full rank, or the smallest keeping `energy` of sum(s^2)."""
    if ratio is not None:
        return max(1, math.ceil(ratio * len(s) - 1e-9))
    assert energy is not None
    kept = torch.cumsum(s.double() ** 2, 0) / max(float((s.double() ** 2).sum()), 1e-300)
    return min(int((kept < energy - 1e-12).sum()) + 1, len(s))


def energy_kept(s: torch.Tensor, rank: int) -> float:
    total = float((s.double() ** 2).sum())
    return float((s[:rank].double() ** 2).sum()) / total if total > 0 else 1.0


def factorized_params(layer: Factorizable, kind: str, ranks: list[int]) -> int:
    w = layer.weight
    bias = layer.bias.numel() if layer.bias is not None else 0
    if kind == "tucker2":
        r_in, r_out = ranks
        return w.shape[1] * r_in + r_in * r_out * w[0, 0].numel() + r_out * w.shape[0] + bias
    return ranks[0] * (w[0].numel() + w.shape[0]) + bias


def _split(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """W (m x n) ~ A @ B with A (m x rank), B (rank x n), the singular values split evenly."""
    u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def shell(layer: Factorizable, entry: dict) -> nn.Module:
    """An empty factorized layer with `layer`'s geometry and `entry`'s ranks."""
    kind = entry["kind"]
    if kind == "linear" and isinstance(layer, nn.Linear):
        return LowRankLinear(layer.in_features, layer.out_features, int(entry["rank"]), layer.bias is not None)
    if kind == "conv-svd" and isinstance(layer, nn.Conv2d):
        return LowRankConv2d(layer, int(entry["rank"]))
    if kind == "tucker2" and isinstance(layer, nn.Conv2d):
        r_in, r_out = entry["rank"]
        return Tucker2Conv2d(layer, int(r_in), int(r_out))
    raise ValueError(f"cannot factorize a {type(layer).__name__} as {kind!r}")


@torch.no_grad()
def factorize(layer: Factorizable, kind: str, ranks: list[int]) -> nn.Module:
    """The truncated factorization of `layer` at `ranks` (exact at `full_rank`)."""
    entry = {"kind": kind, "rank": ranks if kind == "tucker2" else ranks[0]}
    new = shell(layer, entry).to(layer.weight.device)
    w = layer.weight.detach().double()
    if kind == "tucker2":
        r_in, r_out = ranks
        u_in = torch.linalg.svd(w.transpose(0, 1).flatten(1), full_matrices=False)[0][:, :r_in]  # (I, r_i)
        u_out = torch.linalg.svd(w.flatten(1), full_matrices=False)[0][:, :r_out]  # (O, r_o)
        new.first.weight.copy_(u_in.T.reshape(r_in, -1, 1, 1))
        new.core.weight.copy_(torch.einsum("oikl,or,is->rskl", w, u_out, u_in))
        new.last.weight.copy_(u_out.reshape(-1, r_out, 1, 1))
        out = new.last
    else:
        a, b = _split(w.flatten(1), ranks[0])
        new.first.weight.copy_(b.reshape(new.first.weight.shape))
        new.second.weight.copy_(a.reshape(new.second.weight.shape))
        out = new.second
    if layer.bias is not None:
        out.bias.copy_(layer.bias)
    return new


def replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    parent._modules[leaf] = new


def apply_plan(model: nn.Module, plan: dict, where: str | Path) -> nn.Module:
    """Replace the layers `plan` names with empty factorized layers (weights are loaded after)."""
    for name, entry in plan.items():
        try:
            layer = model.get_submodule(name)
            replace(model, name, shell(layer, entry))  # type: ignore[arg-type]
        except (AttributeError, ValueError, KeyError, TypeError) as e:
            raise ArtifactError(f"{where}: spec.lowrank.{name}: cannot rebuild this factorized layer ({e})") from None
    return model


apply_spec = apply_plan  # the hook frugalml.artifact.SPEC_EXTENSIONS calls
