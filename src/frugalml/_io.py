"""Atomic file writes and safe JSON/safetensors helpers (never pickle)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file next to `path`, fsync, rename: readers see the old or the new file,
    never half of one. Failures (full disk, read-only folder) are one OutputError naming the file."""
    from frugalml.errors import OutputError

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, compact: bool = False) -> None:
    """`obj` as JSON, indented for people to read, or on one line without spaces (`compact`)."""
    layout = {"separators": (",", ":")} if compact else {"indent": 2}
    atomic_write_text(path, json.dumps(obj, sort_keys=False, default=_json_default, **layout) + "\n")


def check_output_file(path: str | os.PathLike) -> Path:
    """An output file path that can be written: not a folder, its folder exists (or can be made)
    and is writable. One ConfigError otherwise, before any expensive work."""
    import errno

    from frugalml.errors import ConfigError

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; give a file name (e.g. {p / 'out'})")
    parent = next((q for q in [p.parent, *p.parent.parents] if q.exists()), Path("."))
    if not parent.is_dir():
        raise ConfigError(f"{parent}: is a file, so {p} cannot be written")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"{p}: not writable ({os.strerror(errno.EACCES)})")
    return p


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def save_tensors_atomic(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save

    contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(contiguous, metadata=metadata))
