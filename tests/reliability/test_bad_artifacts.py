"""Bad artifacts: missing, corrupt, hostile or mismatched model folders give one clear line naming the
file and key; nothing is unpickled and no code named by a file runs unless the caller trusts it."""

from __future__ import annotations

import json
import pickle
import sys

import pytest
import torch

import frugalml
from frugalml import artifact
from frugalml.errors import ArtifactError
from frugalml.models import build_model
from tests.reliability.conftest import assert_clean_error, save_tiny_artifact, snapshot


def _edit_json(key_path: str, value):
    def edit(d):
        info = json.loads((d / "model.json").read_text())
        node = info
        parts = key_path.split(".")
        for p in parts[:-1]:
            node = node[p]
        if value is _DEL:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
        (d / "model.json").write_text(json.dumps(info))

    return edit


_DEL = object()


def _write(name: str, data: bytes):
    return lambda d: (d / name).write_bytes(data)


def _unlink(name: str):
    return lambda d: (d / name).unlink()


def _other_weights(d):
    """The first layer of a wider model with the second layer of the saved one: shapes that load
    one by one but do not chain."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(d / "model.safetensors"))
    wide = build_model("mlp", (1, 8, 8), 4, hidden=[16]).state_dict()
    tensors.update({k: v for k, v in wide.items() if k.startswith(next(iter(tensors)).split(".")[0])})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(d / "model.safetensors"))


def _truncate(name: str):
    def edit(d):
        p = d / name
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])

    return edit


class _Boom:
    def __reduce__(self):
        return (print, ("pwned",))


CASES = {
    "no-model-json": (_unlink("model.json"), ["not a frugalml artifact"]),
    "model-json-not-json": (_write("model.json", b"{not json"), ["model.json", "not JSON"]),
    "model-json-list": (_write("model.json", b"[1, 2]"), ["model.json", "expected a JSON object"]),
    "model-json-empty": (_write("model.json", b""), ["model.json", "not JSON"]),
    "model-json-binary": (_write("model.json", b"\xff\xfe\x00"), ["model.json"]),
    "no-spec": (_edit_json("spec", _DEL), ["model.json", "spec", "Field required"]),
    "spec-not-mapping": (_edit_json("spec", "mlp"), ["model.json", "spec"]),
    "spec-no-name": (_edit_json("spec.name", _DEL), ["model.json", "spec.name"]),
    "spec-shape-terabytes": (_edit_json("spec.input_shape", [3, 1000000, 1000000]), ["spec.input_shape", "limit"]),
    "spec-shape-negative": (_edit_json("spec.input_shape", [1, -8, 8]), ["spec.input_shape"]),
    "spec-shape-text": (_edit_json("spec.input_shape", "1x8x8"), ["spec.input_shape"]),
    "spec-classes-zero": (_edit_json("spec.num_classes", 0), ["spec.num_classes"]),
    "spec-classes-huge": (_edit_json("spec.num_classes", 10**12), ["spec.num_classes"]),
    "spec-kwargs-list": (_edit_json("spec.kwargs", [1]), ["spec.kwargs"]),
    "spec-unknown-model": (_edit_json("spec.name", "resnet999"), ["unknown model 'resnet999'"]),
    "spec-bad-kwarg": (_edit_json("spec.kwargs", {"hidden": [8], "wings": 2}), ["wings"]),
    "unknown-format": (_edit_json("format", "tensorflow"), ["model.json", "unknown artifact format 'tensorflow'"]),
    "newer-version": (_edit_json("frugalml_artifact", 99), ["model.json", "frugalml_artifact"]),
    "attributes-not-mapping": (_edit_json("module_attributes", [1]), ["model.json", "module_attributes"]),
    "alias-to-nothing": (_edit_json("aliases", {"1.weight": "nope"}), ["aliases", "nope"]),
    "weights-missing": (_unlink("model.safetensors"), ["model.safetensors", "missing"]),
    "weights-garbage": (_write("model.safetensors", b"\x00" * 64), ["model.safetensors", "corrupt"]),
    "weights-truncated": (_truncate("model.safetensors"), ["model.safetensors", "corrupt"]),
    "weights-pickle": (_write("model.safetensors", pickle.dumps(_Boom())), ["model.safetensors", "corrupt"]),
    "weights-wrong-shapes": (_other_weights, ["do not fit together"]),
    "user-factory-untrusted": (_edit_json("spec.name", "tests.models.frugal_user_nets:tiny_net"),
                               ["code outside frugalml", "--trust-code"]),
    "builtin-callable-untrusted": (_edit_json("spec.name", "builtins:print"), ["'builtins:print'", "--trust-code"]),
    "os-system-untrusted": (_edit_json("spec.name", "os:system"), ["'os:system'", "--trust-code"]),
    "packed-file-missing": (_edit_json("format", "torch-packed"), ["model.packed.safetensors", "missing"]),
    "packed-no-layout": (lambda d: (_edit_json("format", "torch-packed")(d),
                                    (d / "model.safetensors").rename(d / "model.packed.safetensors")),
                         ["model.packed.safetensors", "no storage layout"]),
    "onnx-file-missing": (lambda d: (_edit_json("format", "onnx-int8")(d), _edit_json("quantization", {"mode": "static"})(d)),
                          ["model.onnx"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_artifact(case, tmp_path, cli):
    edit, needles = CASES[case]
    art = save_tiny_artifact(tmp_path / "art")
    edit(art)
    before = snapshot(tmp_path)
    res = cli("measure", art, "--data", "synthetic")
    assert_clean_error(res, *needles)
    assert "pwned" not in res.out
    assert snapshot(tmp_path) == before


def test_missing_artifact_folder(tmp_path, cli):
    assert_clean_error(cli("measure", tmp_path / "nope", "--data", "synthetic"), "nope")


def test_untrusted_factory_is_never_imported(tmp_path, monkeypatch):
    """Security: loading must not import a module named by model.json (its import could run code)."""
    mod = tmp_path / "evil_factory_mod.py"
    marker = tmp_path / "imported"
    mod.write_text(f"open({str(marker)!r}, 'w').write('x')\ndef make(shape, n, **kw):\n    raise SystemExit\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    art = save_tiny_artifact(tmp_path / "art")
    _edit_json("spec.name", "evil_factory_mod:make")(art)
    with pytest.raises(ArtifactError, match="trust_code=True"):
        frugalml.load(art)
    assert not marker.exists() and "evil_factory_mod" not in sys.modules


def test_trusted_user_factory_loads(tmp_path):
    sys.path.insert(0, str(tmp_path))
    try:
        (tmp_path / "good_factory_mod.py").write_text(
            "import torch.nn as nn\ndef make(shape, n, **kw):\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, n))\n")
        from frugalml.models import model_spec

        model = artifact.build_from_spec(model_spec("good_factory_mod:make", (1, 8, 8), 4), trust_code=True)
        artifact.save(model, tmp_path / "art")  # the spec build_model attached
        x = torch.randn(2, 1, 8, 8)
        assert torch.equal(frugalml.load(tmp_path / "art", trust_code=True)(x), model(x))
    finally:
        sys.path.remove(str(tmp_path))


def test_no_pickle_reaches_torch_load(tmp_path):
    """Weights files are safetensors only: a pickle in their place is reported corrupt, never run."""
    art = save_tiny_artifact(tmp_path / "art")
    (art / "model.safetensors").write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ArtifactError, match="corrupt safetensors"):
        frugalml.load(art)


def test_a_factory_that_cannot_rebuild_fails_at_save_time_not_load_time(tmp_path):
    from frugalml.errors import ConfigError
    from frugalml.models import model_spec

    model = build_model("mlp", (1, 8, 8), 4, hidden=[8])
    with pytest.raises(ConfigError, match="cannot save.*no_such_module_xyz"):
        artifact.save(model, tmp_path / "a", model_spec("no_such_module_xyz:make", (1, 8, 8), 4))
    cnn = build_model("cnn", (1, 8, 8), 4)
    with pytest.raises(ConfigError, match="cannot save.*tensors differ"):  # the factory builds another model
        artifact.save(cnn, tmp_path / "b", model_spec("tests.models.frugal_user_nets:tiny_net", (1, 8, 8), 4))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_save_needs_no_spec_for_models_build_model_made(tmp_path):
    model = build_model("mlp", (1, 8, 8), 4, hidden=[8])
    artifact.save(model, tmp_path / "a")
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(frugalml.load(tmp_path / "a")(x), model(x))
    from frugalml.errors import ConfigError

    with pytest.raises(ConfigError, match="does not know how to rebuild it"):
        artifact.save(torch.nn.Linear(3, 4), tmp_path / "b")
