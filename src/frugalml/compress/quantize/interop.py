"""ONNX and torch.export plumbing shared by the onnxruntime backend, the fp32 ONNX Runtime reference
and `frugal export`: exporting a module, opening an InferenceSession, and keeping int8 QDQ graphs
exact on CPUs without 8-bit dot-product instructions."""

from __future__ import annotations

import inspect
import io
from typing import Any

import torch
import torch.nn as nn

from frugalml.compress.quantize._runtime import first_line, native_stdout_silenced, quiet
from frugalml.data.features import Features, as_args, input_names
from frugalml.errors import UnsupportedError

OPSET = 17


def dynamic_dims(example: Any) -> tuple[dict[int, Any], ...]:
    """torch.export `dynamic_shapes` for `as_args(example)`: one shared batch dimension (and one shared
    sequence dimension for named 2-D inputs such as token ids)."""
    if not isinstance(example, Features):
        return ({0: torch.export.Dim("batch")},)
    auto = torch.export.Dim.AUTO  # the exporter finds the shared dimensions and their bounds
    return tuple({0: auto, 1: auto} if t.dim() == 2 else {0: auto} for t in example.args())


def export_onnx(model: nn.Module, example: Any) -> bytes:
    """Float (or QDQ) ONNX with a dynamic batch axis (and sequence axis for named token inputs). The
    TorchScript-based exporter is tried first: it is fast and folds BatchNorm into convs; the dynamo
    exporter is the fallback for what it cannot trace (and the one that exports pt2e q/dq graphs). A
    `Features` example exports one graph input per name, with its dtype (int64 token ids stay int64).
    The caller passes an eval-mode model."""
    errors = []
    args, names = as_args(example), input_names(example)
    io_names = {"input_names": names, "output_names": ["logits"]}
    for dynamo in (False, True):
        buf = io.BytesIO()
        try:
            with quiet(), torch.no_grad():
                if dynamo:
                    torch.onnx.export(model, args, buf, dynamic_shapes=dynamic_dims(example), dynamo=True,
                                      verbose=False, **io_names)
                else:
                    axes: dict[str, dict[int, str]] = {"logits": {0: "batch"}}
                    for name, t in zip(names, args):
                        axes[name] = {0: "batch", 1: "sequence"} if isinstance(example, Features) and t.dim() == 2 \
                            else {0: "batch"}
                    with native_stdout_silenced():
                        torch.onnx.export(model, args, buf, dynamic_axes=axes, opset_version=OPSET, dynamo=False,
                                          **io_names)
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


def session_feed(session: Any, x: Any) -> dict[str, Any]:
    """{graph input: numpy array}: named inputs by name with their own dtype, one tensor as float32."""
    import numpy as np

    names = [i.name for i in session.get_inputs()]
    if isinstance(x, Features):
        missing = [n for n in names if n not in x]
        if missing:
            raise UnsupportedError(f"the ONNX graph takes {', '.join(missing)}, which the data does not have")
        return x.numpy_feed(names)
    return {names[0]: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}


def run_session(session: Any, x: Any) -> torch.Tensor:
    return torch.from_numpy(session.run(None, session_feed(session, x))[0])


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


def auto_dims(example: Any) -> tuple[dict[int, Any], ...]:
    """`dynamic_shapes` for torch.export: the batch dimension of every input left to the exporter."""
    return tuple({0: torch.export.Dim.AUTO} for _ in as_args(example))


def example_input(model: nn.Module, spec: dict, batch: int = 8) -> Any:
    """A fixed input that fits `model`: its own `example_input` (named integer inputs), else a seeded
    float batch of the spec's input shape. Used to trace/rebuild graphs on load."""
    make = getattr(model, "example_input", None)
    if callable(make):  # token inputs, as long as the data's sequences (graphs are traced for that length)
        return make(batch, int(spec["input_shape"][0]))
    g = torch.Generator().manual_seed(0)
    return torch.randn(batch, *spec["input_shape"], generator=g)


def _shapes_for(module: nn.Module, x: Any) -> tuple:
    """`auto_dims(x)` in the structure of `module.forward`'s signature: a `*inputs` forward takes
    all inputs as one tuple (torch.export matches dynamic_shapes to the signature)."""
    params = inspect.signature(module.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params):
        return (auto_dims(x),)
    return auto_dims(x)


def capture_program(module: nn.Module, x: Any, what: str) -> torch.export.ExportedProgram:
    """torch.export with a dynamic batch, without example inputs (saved, they would be a pickle)."""
    try:
        with quiet(), torch.no_grad():
            program = torch.export.export(module, as_args(x), dynamic_shapes=_shapes_for(module, x))
    except Exception as e:  # torch.export raises many internal types
        raise UnsupportedError(
            f"torch.export cannot capture {what} ({first_line(e)}); try --format onnx"
        ) from None
    program._example_inputs = None
    return program
