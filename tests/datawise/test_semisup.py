"""Semi-supervised methods: the masked loss, adaptive thresholds, the stage with every method, exact
resume, and the errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from frugalml.datawise.api import semisup
from frugalml.datawise.semisup import SemiSupStage
from frugalml.datawise.ssl_methods import FlexMatch, FlexMatchTerm, UnlabelledStream, masked_pseudo_label_loss
from frugalml.errors import ConfigError
from frugalml.models import ModelConfig
from frugalml.train import TrainConfig

MLP = ModelConfig(name="mlp", kwargs={"hidden": [16]})
TRAIN = TrainConfig(epochs=2, batch_size=8, lr=0.05)


def test_fixmatch_loss_masks_low_confidence_samples():
    weak = torch.tensor([[9.0, 0.0, 0.0], [0.1, 0.0, 0.0]])  # sample 0 confident (class 0), sample 1 not
    strong = torch.tensor([[2.0, 1.0, 0.0], [-50.0, 50.0, 0.0]])  # sample 1 would cost ~100 if counted
    loss, mask, pseudo = masked_pseudo_label_loss(strong, weak, 0.95)
    assert mask.tolist() == [1.0, 0.0] and pseudo.tolist() == [0, 0]
    expected = F.cross_entropy(strong[:1], torch.tensor([0])) / 2  # averaged over all samples, as in FixMatch
    torch.testing.assert_close(loss, expected)
    assert loss < 1.0  # with the mask ignored it would be ~50


def test_per_sample_thresholds_apply_per_sample():
    weak = torch.tensor([[3.0, 0.0], [3.0, 0.0]])
    _, mask, _ = masked_pseudo_label_loss(weak, weak, torch.tensor([0.5, 0.99]))
    assert mask.tolist() == [1.0, 0.0]


def test_flexmatch_lowers_thresholds_of_classes_learned_less(few):
    term = FlexMatchTerm(FlexMatch(threshold=0.9, warmup=False), few, seed=0, batch_size=8)
    term.learned[:30] = 0  # class 0 often confidently predicted, class 1 rarely, the others never
    term.learned[30:33] = 1
    thr = term.class_thresholds()
    assert thr[0] == pytest.approx(0.9) and 0 < thr[1] < thr[0] and thr[2] == 0


def test_unlabelled_stream_cycles_through_every_sample_and_resumes():
    s = UnlabelledStream(10, 4, seed=0)
    seen = torch.cat([s.next(), s.next()])
    assert len(set(seen.tolist())) == 8
    state = {k: v.clone() for k, v in s.state_dict().items()}
    a = [s.next().tolist() for _ in range(3)]
    s.load_state_dict(state)
    assert [s.next().tolist() for _ in range(3)] == a


@pytest.mark.parametrize("method", ["pseudo_label", "fixmatch", "flexmatch", "mean_teacher"])
def test_every_method_trains_and_reports_pseudo_labels(few, method, tmp_path):
    cfg = SemiSupStage(name="s", method={"name": method, "mu": 2}, model=MLP, unlabelled_per_epoch=64)
    model, metrics = semisup(cfg, few, train=TRAIN, workdir=tmp_path)
    info = metrics["semisup"]
    assert info["steps_per_epoch"] == 4 and info["labelled"] == 32 and metrics["labels_used"] == 32
    assert len(info["history"]) == 2 and "pseudo_quantity" in info["history"][0]
    pool = info["pseudo_labels"]
    assert 0 <= pool["quantity"] <= 1 and pool["samples"] == len(few.x_unlabelled)
    assert model(few.x_test[:2]).shape == (2, 4)


def test_ema_hands_on_the_averaged_weights_and_leaves_training_alone(few, tmp_path):
    def run(ema, where):
        cfg = SemiSupStage(name="s", method={"name": "fixmatch", "mu": 2}, model=MLP, unlabelled_per_epoch=64, ema=ema)
        return semisup(cfg, few, train=TRAIN, workdir=tmp_path / where)

    last, plain = run(None, "plain")
    almost_last, m_tiny = run(1e-9, "tiny")  # an average that is (almost) the last weights
    averaged, m_avg = run(0.9, "avg")
    assert "ema" not in plain["semisup"]
    info = m_avg["semisup"]["ema"]
    assert info["steps_averaged"] == 2 * 4 and info["decay"] == 0.9  # every optimizer step of 2 epochs
    for (name, p), q, r in zip(last.named_parameters(), almost_last.parameters(), averaged.parameters()):
        assert torch.allclose(p, q, atol=1e-6), name  # EMA does not change the training itself
        assert not torch.allclose(p, r, atol=1e-4), name  # and the averaged weights are what comes back
    assert info["val_accuracy_last_weights"] == m_tiny["semisup"]["ema"]["val_accuracy_last_weights"]


@pytest.mark.parametrize("ema", [None, 0.9])  # with ema, the average itself must survive the interruption
def test_semisup_resumes_exactly_after_an_interruption(few, tmp_path, monkeypatch, ema):
    from frugalml.datawise import semisup as stage_module
    from frugalml.stages import StageContext

    cfg = SemiSupStage(name="s", method={"name": "flexmatch", "mu": 2}, model=MLP, unlabelled_per_epoch=32, ema=ema)
    full, _ = semisup(cfg, few, train=TRAIN, workdir=tmp_path / "full")
    end_epoch = stage_module.SemiSupTrainer._end_epoch

    def interrupted(self, train, t0):
        if self.epoch == 2:
            raise KeyboardInterrupt  # after epoch 1's checkpoint, before epoch 2's
        end_epoch(self, train, t0)

    monkeypatch.setattr(stage_module.SemiSupTrainer, "_end_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        semisup(cfg, few, train=TRAIN, workdir=tmp_path / "cut")
    monkeypatch.setattr(stage_module.SemiSupTrainer, "_end_epoch", end_epoch)
    ctx = StageContext(data=few, model_spec={}, stage_dir=tmp_path / "cut", train_defaults=TRAIN, resume=True)
    resumed = stage_module.run_semisup_stage(None, cfg, ctx)
    x = few.x_test[:8]
    assert torch.equal(resumed(x), full(x))


def test_no_pool_is_one_clear_error(tmp_path):
    from frugalml.data import DataConfig, load_data

    data = load_data(DataConfig(name="synthetic", synthetic_samples=64))
    with pytest.raises(ConfigError, match="needs an unlabelled pool; set data.labels_per_class"):
        semisup(SemiSupStage(name="s", model=MLP), data, train=TRAIN, workdir=tmp_path)
