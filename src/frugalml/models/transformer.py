"""A small Vision Transformer (Dosovitskiy et al. 2021): patch embedding, cls token, pre-norm blocks.

Attention is written with explicit `qkv`/`proj` Linear layers and plain int `num_heads`/`head_dim`
attributes read in `forward`, so Torch-Pruning can remove heads or head dims (pass
`attention_heads(model)` as its `num_heads=`, then `sync_attention_heads(model, pruner.num_heads)`),
and the artifact loader restores the pruned attributes.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from frugalml.models._activations import make_activation
from frugalml.models._layers import probability, require
from frugalml.models._registry import register_model


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        # fixed at init: pruning head dims must not rescale the remaining logits
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * self.num_heads * self.head_dim)
        self.proj = nn.Linear(self.num_heads * self.head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # unbind (not indexing) is what Torch-Pruning maps back to qkv rows
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(n, t, -1)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, activation: str, dropout: float) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden), make_activation(activation), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        activation: str,
        dropout: float,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        self.patch_embed = nn.Conv2d(c, dim, patch_size, stride=patch_size)
        num_patches = (h // patch_size) * (w // patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        self.blocks = nn.Sequential(
            *[Block(dim, heads, mlp_ratio, activation, dropout) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, patches, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@register_model("transformer")
def transformer(
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    activation: str = "relu",
    patch_size: int | None = None,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
) -> nn.Module:
    """`patch_size` defaults to a quarter of the smaller side (a 4x4 grid of patches)."""
    side = min(input_shape[1:])
    patch_size = max(1, side // 4) if patch_size is None else patch_size
    require(
        isinstance(patch_size, int) and 0 < patch_size <= side,
        "transformer",
        f"patch_size must be an int in 1..{side}, got {patch_size!r}",
    )
    for key, val in (("dim", dim), ("depth", depth), ("heads", heads)):
        require(isinstance(val, int) and val > 0, "transformer", f"{key} must be a positive int, got {val!r}")
    require(dim % heads == 0, "transformer", f"dim ({dim}) must be divisible by heads ({heads})")
    require(
        isinstance(mlp_ratio, (int, float)) and mlp_ratio > 0,
        "transformer",
        f"mlp_ratio must be > 0, got {mlp_ratio!r}",
    )
    dropout = probability("transformer", "dropout", dropout)
    return VisionTransformer(
        input_shape, num_classes, patch_size, dim, depth, heads, mlp_ratio, activation, dropout
    )


def attention_heads(model: nn.Module) -> dict[nn.Module, int]:
    """`{qkv Linear: num_heads}` for Torch-Pruning's `num_heads=` argument."""
    return {m.qkv: m.num_heads for m in model.modules() if isinstance(m, Attention)}


def sync_attention_heads(model: nn.Module, num_heads: dict[nn.Module, int] | None = None) -> None:
    """After pruning, make each Attention's `num_heads`/`head_dim` match its (smaller) qkv layer."""
    for m in model.modules():
        if isinstance(m, Attention):
            if num_heads is not None and m.qkv in num_heads:
                m.num_heads = int(num_heads[m.qkv])
            m.head_dim = m.qkv.out_features // (3 * m.num_heads)
