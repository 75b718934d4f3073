"""`frugal export ARTIFACT --format onnx|pt2`: write a deployable file from any artifact and check it
against the in-memory model on one batch (max abs difference of the logits, top-1 agreement).

- onnx: float models via torch.onnx.export; a quantized artifact exports through its own hooks
  (`QuantizedModel.to_onnx`): `onnx-int8` is already ONNX (copied), pt2e int8 graphs export their QDQ
  pattern (with uint8 weights on CPUs without VNNI, where ONNX Runtime's u8*s8 kernels saturate).
- pt2:  a `torch.export` archive (`torch.export.save`, loaded back with `torch.export.load`), with a
  dynamic batch dimension. Example inputs are not stored, so the archive holds no pickled data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from frugalml import artifact
from frugalml._io import atomic_write_bytes, check_output_file
from frugalml.errors import ArtifactError, ConfigError, UnsupportedError

FORMATS = ("onnx", "pt2")


@dataclass
class ExportReport:
    path: Path
    format: str
    max_abs_diff: float
    top1_agreement: float
    batch_size: int

    def summary(self) -> str:
        return (
            f"wrote {self.path} ({self.format}); on a batch of {self.batch_size}: max |diff| "
            f"{self.max_abs_diff:.3g}, top-1 agreement {self.top1_agreement:.1%}"
        )


def _check_batch(data: Any, spec: dict, batch_size: int) -> torch.Tensor:
    """Real inputs when data is given (a DataBundle or a tensor), else a seeded random batch."""
    if isinstance(data, torch.Tensor):
        x = data
    elif data is not None:
        x = data.sample_input(batch_size)
    else:
        x = torch.randn(batch_size, *spec["input_shape"], generator=torch.Generator().manual_seed(0))
    if list(x.shape[1:]) != list(spec["input_shape"]):
        raise ConfigError(
            f"export check batch has shape {list(x.shape[1:])} but the model takes {list(spec['input_shape'])}"
        )
    return x.float()


def _to_onnx(model: nn.Module, x: torch.Tensor) -> bytes:
    from frugalml.compress.quantize.interop import export_onnx

    to_onnx = getattr(model, "to_onnx", None)  # quantized artifacts know how they export
    if to_onnx is not None:
        return to_onnx(x)
    try:
        return export_onnx(model, x)
    except UnsupportedError as e:
        raise UnsupportedError(f"{e}; try --format pt2") from None


def _to_pt2(model: nn.Module, x: torch.Tensor) -> bytes:
    from frugalml.compress.quantize.interop import capture_program

    to_pt2 = getattr(model, "to_pt2", None)
    program = to_pt2(x) if to_pt2 is not None else capture_program(model, x, type(model).__name__)
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return buf.getvalue()


def _run_onnx(blob: bytes, x: torch.Tensor) -> torch.Tensor:
    from frugalml.compress.quantize.interop import make_session, run_session

    return run_session(make_session(blob, torch.get_num_threads()), x)


def _run_pt2(path: Path, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.export.load(str(path)).module()(x)


def export(
    artifact_dir: str | Path,
    fmt: str,
    out: str | Path | None = None,
    data: Any = None,
    batch_size: int = 64,
    trust_code: bool = False,
) -> ExportReport:
    """Export the artifact in `artifact_dir` to `fmt` ("onnx" or "pt2"), written to `out` (default:
    next to the artifact directory, `<dir>.onnx` / `<dir>.pt2`), and compare its outputs with the
    loaded artifact on a batch of `data` (a DataBundle or an input tensor; random if None)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    directory = Path(artifact_dir)
    spec = artifact.read_info(directory)["spec"]
    path = Path(out) if out is not None else directory.parent / f"{directory.name}.{fmt}"
    check_output_file(path)
    if path.resolve().parent == directory.resolve():
        raise ConfigError(f"--out {path} is inside the artifact directory; write it elsewhere")
    if data is not None and not isinstance(data, torch.Tensor):
        data.check_fits(spec, f"artifact {directory}")
    model = artifact.load(directory, trust_code=trust_code).eval()
    if getattr(model, "compiled", False):
        model.compiled = False  # compare with the very q/dq graph that is exported, not inductor's kernels
    x = _check_batch(data, spec, batch_size)
    blob = _to_onnx(model, x) if fmt == "onnx" else _to_pt2(model, x)
    atomic_write_bytes(path, blob)
    try:
        got = _run_onnx(blob, x) if fmt == "onnx" else _run_pt2(path, x)
    except Exception as e:  # the runtime's own error types
        raise ArtifactError(
            f"{path}: the exported model does not run ({str(e).splitlines()[0][:200]})"
        ) from None
    with torch.no_grad():
        expected = model(x).float()
    got = got.float()
    return ExportReport(
        path=path,
        format=fmt,
        max_abs_diff=float((got - expected).abs().max()),
        top1_agreement=float((got.argmax(1) == expected.argmax(1)).float().mean()),
        batch_size=len(x),
    )
