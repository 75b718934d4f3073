"""Bad recipes: every one exits 2 with one clear line naming the file and key, and leaves nothing
behind (no run folder, no file anywhere else in the tree)."""

from __future__ import annotations

import copy

import pytest

from tests.conftest import tiny_recipe
from tests.reliability.conftest import assert_clean_error, snapshot, write_recipe


def _set(path: str, value):
    """A recipe edit: set `a.b.0.c` to value (None deletes the key)."""

    def edit(raw: dict) -> dict:
        node = raw
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        last = parts[-1]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return raw

    return edit


_DELETE = object()


def _stages(*stages):
    return lambda raw: {**raw, "stages": [{"kind": "train", "name": "base"}, *stages]}


PRUNE_FT = {"epochs": 1}
CASES = {
    # top level and sections
    "unknown-top-key": (_set("bogus", 1), ["r.yaml: bogus: unknown key", "stages"]),
    "name-path": (_set("name", "../evil"), ["r.yaml: name:", "not a valid name"]),
    "name-space": (_set("name", "my run"), ["r.yaml: name:", "letters, digits"]),
    "name-empty": (_set("name", ""), ["r.yaml: name:"]),
    "seed-text": (_set("seed", "abc"), ["r.yaml: seed:"]),
    "data-number": (_set("data", 5), ["r.yaml: data:"]),
    "data-unknown": (_set("data.name", "nope"), ["r.yaml: data.name: unknown dataset 'nope'", "digits"]),
    "data-colon-empty": (_set("data.name", "idx:"), ["r.yaml: data.name:", "directory"]),
    "data-val-fraction": (_set("data.val_fraction", 1.5), ["r.yaml: data.val_fraction:"]),
    "data-limit-zero": (_set("data.limit", 0), ["r.yaml: data.limit:"]),
    "data-channels": (_set("data.channels", 2), ["r.yaml: data.channels:"]),
    "data-unknown-key": (_set("data.rooot", "x"), ["r.yaml: data.rooot: unknown key", "root"]),
    "model-unknown": (_set("model.name", "resnet999"), ["r.yaml: model.name: unknown model", "cnn"]),
    "model-activation": (_set("model.activation", "swishy"), ["r.yaml: model.activation:", "relu"]),
    "model-kwarg": (_set("model.kwargs", {"bogus": 1}), ["r.yaml: model:", "bogus"]),
    "model-kwarg-activation": (_set("model.kwargs", {"activation": "relu"}), ["model.activation"]),
    "model-list": (_set("model", [1]), ["r.yaml: model:"]),
    "train-epochz": (_set("train.epochz", 3), ["r.yaml: train.epochz: unknown key", "epochs"]),
    "train-epochs-negative": (_set("train.epochs", -1), ["r.yaml: train.epochs:"]),
    "train-epochs-text": (_set("train.epochs", "many"), ["r.yaml: train.epochs:", "'many'"]),
    "train-optimizer": (_set("train.optimizer", "adam"), ["r.yaml: train.optimizer:", "sgd", "adamw"]),
    "train-lr-zero": (_set("train.lr", 0), ["r.yaml: train.lr:"]),
    "train-batch-zero": (_set("train.batch_size", 0), ["r.yaml: train.batch_size:"]),
    "train-warmup": (_set("train.warmup_epochs", 5), ["r.yaml:", "warmup_epochs"]),
    "train-schedule": (_set("train.schedule", "linear"), ["r.yaml: train.schedule:", "cosine"]),
    "train-accum-zero": (_set("train.grad_accum", 0), ["r.yaml: train.grad_accum:"]),
    "train-smoothing": (_set("train.label_smoothing", 1.0), ["r.yaml: train.label_smoothing:"]),
    "train-bf16": (_set("train.bf16", "sometimes"), ["r.yaml: train.bf16:"]),
    "augment-negative": (_set("train.augment", {"crop_padding": -1}), ["r.yaml: train.augment.crop_padding:"]),
    "augment-list": (_set("train.augment", [1, 2]), ["r.yaml: train.augment:"]),
    "measure-threads": (_set("measure.threads", 0), ["r.yaml: measure.threads:"]),
    "measure-batches-empty": (_set("measure.batch_sizes", []), ["r.yaml: measure.batch_sizes:"]),
    "measure-batches-zero": (_set("measure.batch_sizes", [0]), ["r.yaml: measure.batch_sizes:"]),
    # stages
    "stages-empty": (_set("stages", []), ["r.yaml: stages:"]),
    "stages-missing": (_set("stages", _DELETE), ["r.yaml: stages:", "Field required"]),
    "stages-mapping": (_set("stages", {"kind": "train"}), ["r.yaml: stages:"]),
    "stage-unknown-kind": (_stages({"kind": "squash"}), ["r.yaml: stages.1.kind: unknown kind 'squash'", "prune"]),
    "stage-no-kind": (_stages({"name": "x"}), ["r.yaml: stages.1.kind: missing 'kind'", "quantize"]),
    "stage-not-mapping": (_stages("prune"), ["r.yaml: stages.1"]),
    "first-stage-quantize": (_set("stages", [{"kind": "quantize"}]), ["r.yaml: stages.0.kind: the first stage"]),
    "duplicate-stage-names": (_stages({"kind": "train", "name": "base"}), ["r.yaml: stages.1.name: duplicate"]),
    "parent-not-earlier": (_stages({"kind": "prune", "ratio": 0.5, "parent": "later"}),
                           ["r.yaml: stages.1.parent:", "'later'", "allowed: base"]),
    "stage-name-traversal": (_stages({"kind": "train", "name": "../../x"}), ["r.yaml: stages.1.name:", "not a valid name"]),
    "stage-name-slash": (_stages({"kind": "train", "name": "a/b"}), ["r.yaml: stages.1.name:"]),
    "stage-name-hidden": (_stages({"kind": "train", "name": ".x"}), ["r.yaml: stages.1.name:"]),
    "stage-name-long": (_stages({"kind": "train", "name": "x" * 65}), ["r.yaml: stages.1.name:"]),
    "train-stage-key": (_stages({"kind": "train", "train": {"epochz": 1}}), ["r.yaml: stages.1.train.epochz"]),
    "train-stage-init": (_stages({"kind": "train", "init": "sideways"}), ["r.yaml: stages.1.init:", "parent"]),
    "train-stage-model": (_stages({"kind": "train", "model": {"name": "nope"}}), ["r.yaml: stages.1.model.name:"]),
    "load-no-path": (_set("stages", [{"kind": "load"}]), ["r.yaml: stages.0.path:", "Field required"]),
    "prune-method": (_stages({"kind": "prune", "method": "magic"}),
                     ["r.yaml: stages.1.method: unknown method 'magic'", "structured"]),
    "prune-ratio-high": (_stages({"kind": "prune", "ratio": 1.5}), ["r.yaml: stages.1.ratio:"]),
    "prune-structured-no-budget": (_stages({"kind": "prune", "method": "structured"}), ["r.yaml: stages.1", "ratio"]),
    "prune-structured-two-budgets": (_stages({"kind": "prune", "method": "structured", "ratio": 0.5,
                                              "macs_budget": 0.5}), ["r.yaml: stages.1", "exactly one"]),
    "prune-unstructured-no-ratio": (_stages({"kind": "prune", "method": "unstructured"}), ["r.yaml: stages.1", "ratio"]),
    "prune-nm-order": (_stages({"kind": "prune", "method": "nm", "n": 4, "m": 2}), ["r.yaml: stages.1", "n < m"]),
    "prune-gradual-no-ft": (_stages({"kind": "prune", "ratio": 0.5, "schedule": "gradual"}),
                            ["r.yaml: stages.1", "finetune"]),
    "prune-ft-override-key": (_stages({"kind": "prune", "ratio": 0.5, "finetune": {"overrides": {"epochz": 1}}}),
                              ["r.yaml: stages.1.finetune.overrides.epochz"]),
    "prune-ft-override-value": (_stages({"kind": "prune", "ratio": 0.5, "finetune": {"overrides": {"lr": -1}}}),
                                ["r.yaml: stages.1.finetune.overrides.lr"]),
    "prune-importance": (_stages({"kind": "prune", "method": "structured", "ratio": 0.5, "importance": "vibes"}),
                         ["r.yaml: stages.1.importance:", "l1"]),
    "quantize-mode": (_stages({"kind": "quantize", "mode": "int3"}), ["r.yaml: stages.1.mode:", "static"]),
    "quantize-backend": (_stages({"kind": "quantize", "backend": "tensorrt"}), ["r.yaml: stages.1.backend:", "onnxruntime"]),
    "quantize-bits": (_stages({"kind": "quantize", "mode": "static", "bits": 4}), ["r.yaml: stages.1", "bits"]),
    "quantize-tolerance": (_stages({"kind": "quantize", "tolerance": -1}), ["r.yaml: stages.1.tolerance:"]),
    "quantize-qat-override": (_stages({"kind": "quantize", "mode": "qat", "qat": {"overrides": {"lr": "fast"}}}),
                              ["r.yaml: stages.1.qat.overrides.lr"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_recipe(case, tmp_path, cli):
    edit, needles = CASES[case]
    raw = edit(copy.deepcopy(tiny_recipe()))
    recipe = write_recipe(tmp_path / "r.yaml", raw)
    before = snapshot(tmp_path)
    res = cli("run", recipe, "--out", tmp_path / "run")
    assert_clean_error(res, *needles)
    assert snapshot(tmp_path) == before  # no run folder, nothing else touched


TEXT_CASES = {
    "duplicate-key": ("name: a\nseed: 1\nname: b\nstages: [{kind: train}]\n", ["r.yaml: line 3", "appears twice"]),
    "duplicate-nested-key": ("train: {epochs: 1, epochs: 2}\nstages: [{kind: train}]\n", ["r.yaml:", "'epochs' appears twice"]),
    "syntax": ("stages: [\n", ["r.yaml:", "not valid YAML"]),
    "list": ("- 1\n- 2\n", ["r.yaml:", "a recipe is a mapping"]),
    "scalar": ("hello\n", ["r.yaml:", "a recipe is a mapping"]),
    "tab-indent": ("train:\n\tepochs: 1\n", ["r.yaml:", "not valid YAML"]),
    "python-tag": ("!!python/object/apply:os.system ['echo hi']\n", ["r.yaml:", "not valid YAML"]),
    "extends-missing": ("extends: nope.yaml\nstages: [{kind: train}]\n", ["extends", "nope.yaml", "not found"]),
    "extends-number": ("extends: 3\nstages: [{kind: train}]\n", ["r.yaml: extends:"]),
    "extends-self": ("extends: r.yaml\nstages: [{kind: train}]\n", ["extends", "levels"]),
    "binary": (b"\xff\xfe\x00garbage", ["r.yaml", "cannot read recipe"]),
}


@pytest.mark.parametrize("case", sorted(TEXT_CASES))
def test_bad_recipe_text(case, tmp_path, cli):
    text, needles = TEXT_CASES[case]
    p = tmp_path / "r.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(tmp_path)
    res = cli("run", p, "--out", tmp_path / "run")
    assert_clean_error(res, *needles)
    assert snapshot(tmp_path) == before


SET_CASES = {
    "no-equals": ("train.epochs", ["--set 'train.epochs': expected key.path=value"]),
    "bad-index": ("stages.7.ratio=1", ["--set stages.7.ratio", "not an index"]),
    "into-value": ("seed.x=1", ["--set seed.x", "is a value, not a section"]),
    "bad-value": ("train.epochs=many", ["train.epochs", "'many'"]),
}


@pytest.mark.parametrize("case", sorted(SET_CASES))
def test_bad_set_override(case, tmp_path, cli):
    override, needles = SET_CASES[case]
    recipe = write_recipe(tmp_path / "r.yaml", tiny_recipe())
    before = snapshot(tmp_path)
    res = cli("run", recipe, "--out", tmp_path / "run", "--set", override)
    assert_clean_error(res, *needles)
    assert snapshot(tmp_path) == before


def test_recipe_path_problems(tmp_path, cli):
    (tmp_path / "adir").mkdir()
    assert_clean_error(cli("run", tmp_path / "adir"), "is a directory")
    assert_clean_error(cli("run", tmp_path / "missing.yaml"), "missing.yaml", "not found")
