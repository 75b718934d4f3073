"""ONNX and torch.export plumbing shared by the onnxruntime backend, the fp32 ONNX Runtime reference
and `frugal export`: exporting a module, opening an InferenceSession, and keeping int8 QDQ graphs
exact on CPUs without 8-bit dot-product instructions."""

from __future__ import annotations

import io
from typing import Any

import torch
import torch.nn as nn

from frugalml.compress.quantize._runtime import first_line, native_stdout_silenced, quiet
from frugalml.errors import UnsupportedError

OPSET = 17


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """Float (or QDQ) ONNX with a dynamic batch axis. The TorchScript-based exporter is tried first:
    it is fast and folds BatchNorm into convs; the dynamo exporter is the fallback for what it cannot
    trace (and the one that exports pt2e q/dq graphs). The caller passes an eval-mode model."""
    errors = []
    names = {"input_names": ["input"], "output_names": ["logits"]}
    for dynamo in (False, True):
        buf = io.BytesIO()
        try:
            with quiet(), torch.no_grad():
                if dynamo:
                    batch = ({0: torch.export.Dim("batch")},)
                    torch.onnx.export(
                        model, (example,), buf, dynamic_shapes=batch, dynamo=True, verbose=False, **names
                    )
                else:
                    axes = {"input": {0: "batch"}, "logits": {0: "batch"}}
                    with native_stdout_silenced():
                        torch.onnx.export(
                            model,
                            (example,),
                            buf,
                            dynamic_axes=axes,
                            opset_version=OPSET,
                            dynamo=False,
                            **names,
                        )
            return buf.getvalue()
        except Exception as e:  # both exporters raise a wide range of internal types
            errors.append(first_line(e, 160))
    raise UnsupportedError(f"torch.onnx.export cannot export {type(model).__name__} ({'; '.join(errors)})")


def make_session(model: bytes | str, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # spinning threads burn the cores between calls and distort timings of everything else
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def run_session(session: Any, x: torch.Tensor) -> torch.Tensor:
    import numpy as np

    feed = {session.get_inputs()[0].name: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}
    return torch.from_numpy(session.run(None, feed)[0])


def unsigned_int8_weights(onnx_bytes: bytes) -> bytes:
    """Store int8 weights as uint8 with zero point +128: the same values, exactly
    (DequantizeLinear(w, s, 0) == DequantizeLinear(w + 128, s, 128)). ONNX Runtime then runs its
    u8*u8 kernels, which do not saturate. Its u8*s8 kernels on x86 CPUs without VNNI sum pairs of
    products in 16 bits and saturate (measured: top-1 agreement 0.875 with the int8 graph it came from)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    inits = {i.name: i for i in model.graph.initializer}
    converted: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        weight, zero_point = inits.get(node.input[0]), inits.get(node.input[2])
        if not all(i is not None and i.data_type == onnx.TensorProto.INT8 for i in (weight, zero_point)):
            continue
        for slot in (0, 2):
            name = node.input[slot]
            init = inits[name]
            if name not in converted:
                values = numpy_helper.to_array(init).astype(np.int16) + 128
                new = numpy_helper.from_array(values.astype(np.uint8), f"{name}_u8")
                model.graph.initializer.append(new)
                converted[name] = new.name
            node.input[slot] = converted[name]
    used = {i for n in model.graph.node for i in n.input}
    unused = [i for i in model.graph.initializer if i.name in converted and i.name not in used]
    for init in unused:
        model.graph.initializer.remove(init)
    return model.SerializeToString()


def capture_program(module: nn.Module, x: torch.Tensor, what: str) -> torch.export.ExportedProgram:
    """torch.export with a dynamic batch, without example inputs (saved, they would be a pickle)."""
    try:
        with quiet(), torch.no_grad():
            program = torch.export.export(module, (x,), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    except Exception as e:  # torch.export raises many internal types
        raise UnsupportedError(
            f"torch.export cannot capture {what} ({first_line(e)}); try --format onnx"
        ) from None
    program._example_inputs = None
    return program
