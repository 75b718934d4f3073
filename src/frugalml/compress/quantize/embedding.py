"""Int8 embedding tables, shared by the int8 backends: a transformer's word embeddings are often half
its weights (all-MiniLM-L6-v2: 47 MB of 91 MB), so an "int8" model that keeps them in float32 is not
much smaller. `Int8Embedding` stores one int8 code per value and one float scale per row (symmetric,
per row: rare tokens with small vectors keep their precision) and dequantizes only the rows it looks
up, so it costs nothing measurable at run time. Plain tensors and `F.embedding`: it exports to ONNX
(Gather + Mul), traces with torch.export, and saves as safetensors.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Int8Embedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer("codes", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8))
        self.register_buffer("scales", torch.ones(num_embeddings, 1))

    @classmethod
    @torch.no_grad()
    def from_float(cls, emb: nn.Embedding) -> Int8Embedding:
        q = cls(emb.num_embeddings, emb.embedding_dim)
        w = emb.weight.detach().float()
        scales = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
        q.codes.copy_(torch.round(w / scales).clamp(-127, 127).to(torch.int8))
        q.scales.copy_(scales)
        return q

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.codes).to(self.scales.dtype) * F.embedding(ids, self.scales)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per row"


def has_embeddings(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Embedding) for m in model.modules())


def quantize_embeddings(model: nn.Module, weights: bool = True) -> list[str]:
    """Replace every nn.Embedding of `model` (in place) by an Int8Embedding; returns their names.
    `weights=False` builds empty ones (a skeleton whose values are loaded afterwards)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding)]
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        emb = getattr(owner, leaf)
        q = Int8Embedding.from_float(emb) if weights else Int8Embedding(emb.num_embeddings, emb.embedding_dim)
        setattr(owner, leaf, q)
    return names


def embedding_note(model: nn.Module) -> str | None:
    """For the stage report: how the embedding tables are stored (None: the model has none)."""
    tables = [m for m in model.modules() if isinstance(m, (nn.Embedding, Int8Embedding))]
    if not tables:
        return None
    values = sum(m.num_embeddings * m.embedding_dim for m in tables)
    if all(isinstance(m, Int8Embedding) for m in tables):
        return f"int8, one scale per row ({values:,} values in {len(tables)} tables; counted in the size)"
    return f"float32 ({values:,} values in {len(tables)} tables)"
