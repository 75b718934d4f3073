"""`Features`: a batch of named tensors (`input_ids`, `attention_mask`, ...) sharing the first dimension.

It stands where a DataBundle's image tensor stands for models that take several inputs (Hugging Face
text models), and supports what frugalml does with an `x`: `len`, indexing rows (an int, a slice, an
index tensor), `.to(device, dtype)` — which casts *floating* tensors only, so token ids stay int64
under fp16/bf16 — `repeat_rows`, concatenation. A model that takes named inputs accepts one as its first
argument (frugalml's `HFEncoder` does); exporters get the tensors positionally (`args()`, in the order
of `names`), with `names` as the graph's input names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

# the order Hugging Face models take their inputs in; other names follow in the order given
CANONICAL_ORDER = ("input_ids", "attention_mask", "token_type_ids")


def _ordered(names: Sequence[str]) -> list[str]:
    first = [n for n in CANONICAL_ORDER if n in names]
    return first + [n for n in names if n not in first]


class Features(Mapping[str, torch.Tensor]):
    """Named tensors with one shared batch dimension (read-only mapping)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if not tensors:
            raise ValueError("Features needs at least one tensor")
        names = _ordered(list(tensors))
        rows = {len(tensors[n]) for n in names}
        if len(rows) != 1:
            raise ValueError(f"Features tensors differ in batch size: {({n: len(tensors[n]) for n in names})}")
        self._t: dict[str, torch.Tensor] = {n: tensors[n] for n in names}

    # --- mapping ---------------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self._t[key]
        return Features({n: t[key] for n, t in self._t.items()})

    def __iter__(self) -> Iterator[str]:
        return iter(self._t)

    def __len__(self) -> int:
        return len(next(iter(self._t.values())))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}" for n, t in self._t.items())
        return f"Features({inner})"

    # --- what an `x` tensor offers -----------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._t)

    def args(self) -> tuple[torch.Tensor, ...]:
        """The tensors in `names` order, for exporters and positional calls."""
        return tuple(self._t.values())

    @property
    def shape(self) -> torch.Size:
        """The first tensor's shape (e.g. (batch, sequence) of `input_ids`)."""
        return next(iter(self._t.values())).shape

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self._t.values())).dtype

    @property
    def device(self) -> torch.device:
        return next(iter(self._t.values())).device

    def dim(self) -> int:
        return len(self.shape)

    def to(self, *args: Any, **kwargs: Any) -> Features:
        """Like Tensor.to, except that a dtype applies to floating tensors only: integer inputs (token
        ids, masks) are never cast, so their values stay exact whatever precision the model runs in."""
        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
            else:
                device = a
        out = {}
        for n, t in self._t.items():
            cast = dtype if dtype is not None and t.is_floating_point() else None
            out[n] = t.to(device=device, dtype=cast) if (device is not None or cast is not None) else t
        return Features(out)

    def detach(self) -> Features:
        return Features({n: t.detach() for n, t in self._t.items()})

    def cpu(self) -> Features:
        return self.to(device="cpu")

    def contiguous(self) -> Features:
        return Features({n: t.contiguous() for n, t in self._t.items()})

    def clone(self) -> Features:
        return Features({n: t.clone() for n, t in self._t.items()})

    def lengths(self) -> torch.Tensor | None:
        """Tokens per row (the attention mask's sums), or None without a mask."""
        mask = self._t.get("attention_mask")
        return None if mask is None or mask.dim() != 2 else mask.sum(dim=1)

    def trimmed(self) -> Features:
        """The same rows without the trailing columns no row attends to (right padding): for a model
        that masks padding, the same outputs for less work. Left-padded rows keep every column."""
        mask = self._t.get("attention_mask")
        if mask is None or mask.dim() != 2 or not len(self):
            return self
        used = mask.bool().any(dim=0).nonzero()
        keep = int(used.max()) + 1 if len(used) else 1
        return Features({n: t[:, :keep] if t.dim() >= 2 else t for n, t in self._t.items()})

    def repeat_rows(self, batch_size: int) -> Features:
        """`batch_size` rows, cycling through these (for latency inputs larger than the split)."""
        return self[torch.arange(batch_size) % len(self)].contiguous()

    def numpy_feed(self, names: Sequence[str] | None = None) -> dict[str, Any]:
        """{name: contiguous numpy array} for ONNX Runtime (only `names`, when given)."""
        import numpy as np

        keep = names if names is not None else self.names
        return {n: np.ascontiguousarray(self._t[n].detach().cpu().numpy()) for n in keep}

    @staticmethod
    def cat(parts: Sequence[Features]) -> Features:
        return Features({n: torch.cat([p[n] for p in parts]) for n in parts[0].names})


def is_features(x: Any) -> bool:
    return isinstance(x, Features)


def as_args(x: Any) -> tuple:
    """Positional arguments for a model call or an exporter: Features unpacked, a tensor as is."""
    return x.args() if isinstance(x, Features) else (x,)


def input_names(x: Any) -> list[str]:
    return x.names if isinstance(x, Features) else ["input"]
