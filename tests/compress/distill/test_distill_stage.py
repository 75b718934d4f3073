"""The distill stage: the student really learns from the teacher, the teacher cache is exact and
reported, hints train adapters, and bad input is one clear line."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from frugalml import artifact
from frugalml.compress.distill import DKD, KD, DistillStage, distill, distill_with_metrics
from frugalml.compress.distill.cache import IndexedTrainer
from frugalml.errors import ConfigError
from frugalml.train import TrainConfig, Trainer, predict_logits

TRAIN = {"batch_size": 32, "lr": 0.05}


def _agreement(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    return float((predict_logits(a, x).argmax(1) == predict_logits(b, x).argmax(1)).float().mean())


def _kl(teacher: nn.Module, student: nn.Module, x: torch.Tensor) -> float:
    t, s = predict_logits(teacher, x), predict_logits(student, x)
    return float(F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean"))


def test_the_student_moves_toward_the_teacher_and_not_without_the_term(data, zoo):
    # a teacher unrelated to the labels (random linear map, made confident): only the distillation
    # term can teach the student its answers
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, data.num_classes)).eval()
    with torch.no_grad():
        teacher[1].weight.mul_(5)
    x = data.x_train
    student = zoo("mlp", seed=2, hidden=[32])
    kl_before = _kl(teacher, student, x)
    cfg = DistillStage(loss=KD(alpha=1.0, temperature=1.0), epochs=10, train=TRAIN)
    distilled, _ = distill_with_metrics(copy.deepcopy(student), teacher, cfg, data, progress=False)
    plain = copy.deepcopy(student)  # the same student, the same training, no distillation term
    Trainer(plain, data, TrainConfig(epochs=10, **TRAIN), progress=False).fit()
    assert _kl(teacher, distilled, x) < 0.5 * kl_before
    assert _agreement(distilled, teacher, x) > 0.8
    assert _agreement(plain, teacher, x) < 0.5  # without the term, nothing pulls it toward the teacher


def test_the_cache_is_used_reported_and_equals_a_live_teacher(data, zoo, teacher):
    cfg = DistillStage(loss=DKD(), epochs=3, train=TRAIN)
    cached, m = distill_with_metrics(zoo("mlp", hidden=[16]), teacher, cfg, data, progress=False)
    report = m["teacher_cache"]
    assert report["used"] and report["samples"] == len(data.y_train)
    assert report["teacher_forward_samples_saved"] == 2 * len(data.y_train)
    live, m_live = distill_with_metrics(zoo("mlp", hidden=[16]), teacher, cfg.model_copy(update={"cache_teacher": False}),
                                        data, progress=False)
    assert m_live["teacher_cache"] == {"used": False, "reason": "cache_teacher: false"}
    for a, b in zip(cached.state_dict().values(), live.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5)
    assert m["training"]["history"][-1]["train_loss"] == pytest.approx(m_live["training"]["history"][-1]["train_loss"], rel=1e-4)


def test_no_cache_with_augmentation(data, zoo, teacher):
    cfg = DistillStage(epochs=2, train={**TRAIN, "augment": {"hflip": True}})
    _, m = distill_with_metrics(zoo("mlp", hidden=[16]), teacher, cfg, data, progress=False)
    assert not m["teacher_cache"]["used"] and "augmentation" in m["teacher_cache"]["reason"]


def test_a_misaligned_cache_fails_loudly(data, zoo, teacher, monkeypatch):
    def shifted(self, x):
        self.batch_indices = self._perm[self._cursor + 1 : self._cursor + 1 + len(x)]
        self._cursor += len(x)
        return self.model(x)

    monkeypatch.setattr(IndexedTrainer, "forward", shifted)
    with pytest.raises(RuntimeError, match="misaligned"):
        distill_with_metrics(zoo("mlp", hidden=[16]), teacher, DistillStage(epochs=2, train=TRAIN), data, progress=False)


def test_hints_train_an_adapter_and_return_the_bare_student(data, zoo, teacher):
    student = zoo("cnn", width=4)
    cfg = DistillStage(loss=None, hints=[{"student": "features.1", "teacher": "features.1"}], epochs=2, train=TRAIN)
    out, m = distill_with_metrics(student, teacher, cfg, data, progress=False)
    assert type(out) is type(student) and set(out.state_dict()) == set(student.state_dict())
    assert m["teacher_cache"]["used"] is False and m["loss"] is None and m["hints"][0]["student"] == "features.1"
    losses = [h["train_loss"] for h in m["training"]["history"]]
    assert losses[-1] < losses[0]


def test_the_verb_leaves_its_inputs_untouched_and_builds_zoo_students(data, zoo, teacher):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    flags = [p.requires_grad for p in teacher.parameters()]
    student = distill("mlp", teacher, {"epochs": 1, "train": TRAIN}, data, progress=False)
    assert student.frugal_spec["name"] == "mlp"
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert [p.requires_grad for p in teacher.parameters()] == flags and not teacher.training


def test_bad_input_is_one_line(data, zoo, teacher):
    cfg = DistillStage(epochs=1)
    with pytest.raises(ConfigError, match=r"predicts 7 classes, but the data \(and so the student\) has 4"):
        torch.manual_seed(0)
        distill_with_metrics(zoo("mlp"), nn.Sequential(nn.Flatten(), nn.Linear(64, 7)), cfg, data, where="stages.d")
    with pytest.raises(ConfigError, match=r"stages.d.teacher: .* does not take the data's input \[1, 8, 8\]"):
        distill_with_metrics(zoo("mlp"), nn.Sequential(nn.Flatten(), nn.Linear(100, 4)), cfg, data, where="stages.d")
    bad = DistillStage(hints=[{"student": "features.9", "teacher": "features.1"}], epochs=1)
    with pytest.raises(ConfigError, match=r"stages.d.hints.0.student: the student has no layer 'features.9'; "
                                          r"candidates: features, features.0, .*fc"):
        distill_with_metrics(zoo("cnn", width=4), teacher, bad, data, where="stages.d")
    odd = DistillStage(hints=[{"student": "features.1", "teacher": "fc"}], epochs=1)
    with pytest.raises(ConfigError, match="cannot be matched"):
        distill_with_metrics(zoo("cnn", width=4), teacher, odd, data, where="stages.d")
    with pytest.raises(ConfigError, match="nothing to distil"):
        DistillStage.checked("stages.d", {"loss": None})


def test_a_teacher_artifact_for_other_data_is_refused_in_a_run(tmp_path, fast_measure):
    from frugalml.errors import FrugalError
    from frugalml.pipeline import run_recipe
    from frugalml.recipe import Recipe

    spec = {"name": "mlp", "kwargs": {}, "input_shape": [1, 8, 8], "num_classes": 7}
    torch.manual_seed(0)
    artifact.save(artifact.build_from_spec(spec), tmp_path / "t7", spec)
    recipe = Recipe.model_validate({
        "data": {"name": "synthetic", "synthetic_samples": 240, "synthetic_classes": 4, "synthetic_shape": [1, 8, 8]},
        "model": {"name": "mlp", "kwargs": {"hidden": [16]}}, "train": {"epochs": 1, **TRAIN}, "measure": fast_measure,
        "stages": [{"kind": "train", "name": "base"}, {"kind": "distill", "name": "d", "teacher": str(tmp_path / "t7")}],
    })
    with pytest.raises(FrugalError, match=r"stages.d.teacher: .*7 classes"):
        run_recipe(recipe, tmp_path / "run")


def test_distillation_with_hints_resumes_from_its_checkpoint(tmp_path, data, zoo, teacher):
    cfg = DistillStage(hints=[{"student": "features.1", "teacher": "features.1"}], epochs=2, train=TRAIN)
    first, _ = distill_with_metrics(zoo("cnn", width=4), teacher, cfg, data, checkpoint_dir=tmp_path / "ck", progress=False)
    again, m = distill_with_metrics(zoo("cnn", width=4), teacher, cfg, data, checkpoint_dir=tmp_path / "ck",
                                    resume=True, progress=False)
    assert m["training"]["epochs_run"] == 2
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
