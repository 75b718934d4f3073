"""Training on 2 processes (gloo on CPU, started by torchrun's agent): the same weights as one process
with the same global batch and seed; accumulation without synchronisation; FSDP2 equal to DDP, with
sharded checkpoints that load into one process; PowerSGD with error feedback converging; byte counts
that agree; a killed rank ending the run with a clear error, and the run resuming after it."""

from __future__ import annotations

import time

import pytest
import torch
from dist_workers import BASE, crash, resume, scenarios, train
from train_helpers import make_model

from frugalml.train.fsdp import load_sharded_weights
from frugalml.train.launch import RankFailedError, launch

ATOL = 1e-5  # two processes sum two half-batch gradients: float rounding differs from one process


def _close(a: dict, b: dict, atol: float = ATOL) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=atol, rtol=0) for k in a)


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[dict, dict, str]:
    """One 2-process launch runs every scenario; both ranks' results."""
    work = tmp_path_factory.mktemp("dist")
    ranks = launch(scenarios, [str(work)], nproc=2, threads=2, timeout=120)
    return ranks[0], ranks[1], str(work)


@pytest.fixture(scope="module")
def one() -> dict:
    """The single-process reference: same model, data, global batch and seed."""
    return train()


def test_ddp_matches_one_process(two, one):
    r0, r1, _ = two
    assert _close(r0["ddp"]["weights"], one["weights"])
    assert _close(r1["ddp"]["weights"], r0["ddp"]["weights"], atol=0)  # replicas stay identical
    s = r0["ddp"]["stats"]
    assert s["processes"] == 2 and s["backend"] == "gloo" and s["global_batch"] == 32 and s["batch_per_process"] == 16
    assert r0["ddp"]["val"] == pytest.approx(one["val"], abs=1 / 64)  # all-reduced over both shards


def test_accumulation_skips_sync_and_equals_the_large_batch(two, one):
    r0, _, _ = two
    assert _close(r0["accum"]["weights"], one["weights"])
    accum, plain = r0["accum"]["stats"]["communication"], r0["ddp"]["stats"]["communication"]
    assert accum["steps"] == plain["steps"] == 18
    # no_sync: one all-reduce per bucket per optimizer step, not per micro-step
    assert accum["collectives_per_step"] == plain["collectives_per_step"]
    assert accum["bytes_per_step"] == plain["bytes_per_step"]


def test_bytes_per_step_counted_and_cross_checked(two):
    r0, _, _ = two
    model = make_model()
    grad = 4 * sum(p.numel() for p in model.parameters())
    plain, fp16 = r0["ddp"]["stats"], r0["fp16"]["stats"]
    assert plain["uncompressed_grad_bytes"] == grad
    assert plain["communication"]["bytes_per_step"] == grad
    assert fp16["communication"]["bytes_per_step"] == grad // 2
    for s in (plain, fp16, r0["powersgd"]["stats"], r0["local_sgd"]["stats"]):
        assert s["communication"]["cross_check"] == "expected == measured"


def test_powersgd_with_error_feedback_compresses_and_converges(two):
    r0, r1, _ = two
    p = r0["powersgd"]
    comm = p["stats"]["communication"]
    assert p["stats"]["powersgd"]["error_feedback"] is True
    # rank-1 factors of the 4x9 conv and 4x256 linear gradients, biases as they are (fp32)
    assert comm["bytes_per_step_after_warmup"] == 4 * ((4 + 9) + 4 + (4 + 256) + 4)
    assert comm["bytes_per_step"] > comm["bytes_per_step_after_warmup"]  # the 2 warm-up steps are plain
    losses = [h["train_loss"] for h in p["history"]]
    assert losses[-1] < 0.5 * losses[0] and p["val"] >= 0.8
    assert _close(r1["powersgd"]["weights"], p["weights"], atol=0)


def test_local_sgd_cuts_all_reduces(two):
    r0, r1, _ = two
    s = r0["local_sgd"]["stats"]
    comm, local = s["communication"], s["local_sgd"]
    assert comm["steps"] == 18 and local["period"] == 3
    assert comm["averaging"]["all_reduces"] == 6  # steps 0, 3, 6, ... : one in 3
    assert local["all_reduces_plain_ddp"] == round(18 * comm["buckets_per_step"])
    assert local["all_reduces_saved"] == local["all_reduces_plain_ddp"] - 6
    # evaluated and handed back averaged: both processes end with the same model
    assert _close(r1["local_sgd"]["weights"], r0["local_sgd"]["weights"], atol=0)


def test_fsdp_matches_ddp_and_its_sharded_checkpoint_loads_in_one_process(two):
    r0, r1, work = two
    fsdp = r0["fsdp"]
    assert _close(fsdp["weights"], r0["ddp"]["weights"])
    assert _close(r1["fsdp"]["weights"], fsdp["weights"], atol=0)
    assert "fsdp_gradient_reduction" in fsdp["stats"]
    plain = load_sharded_weights(make_model(seed=1), f"{work}/fsdp-ckpt")
    assert _close(plain.state_dict(), fsdp["weights"], atol=0)


def test_user_errors_are_one_line(two):
    r0, _, _ = two
    assert r0["bf16_error"].startswith("UnsupportedError: train.distributed.comm_hook: bf16")
    assert "gloo" in r0["bf16_error"] and "fp16" in r0["bf16_error"]
    assert r0["batch_error"].startswith("ConfigError: train.batch_size: 33 is the global batch")


def test_killed_rank_fails_fast_and_the_run_resumes_exactly(tmp_path, two):
    r0, _, _ = two
    ckpt = tmp_path / "ckpt"
    t0 = time.perf_counter()
    with pytest.raises(RankFailedError, match=r"rank 1 \(local rank 1, pid \d+\) was killed by SIGKILL"):
        launch(crash, [str(ckpt), 9], nproc=2, threads=2, timeout=60)  # step 9: inside epoch 2
    assert time.perf_counter() - t0 < 60  # the agent stops rank 0 at once: no waiting for a timeout
    assert (ckpt / "state.json").is_file()
    done = launch(resume, [str(ckpt)], nproc=2, threads=2, timeout=60)
    assert [h["epoch"] for h in done[0]["history"]] == [1, 2, 3]
    assert _close(done[0]["weights"], r0["ddp"]["weights"], atol=0)  # as if never interrupted


def test_config_rejects_options_that_do_not_combine():
    from frugalml.errors import ConfigError
    from frugalml.train.config import DistributedConfig, TrainConfig

    with pytest.raises(ConfigError, match="DDP options"):
        DistributedConfig.checked("train.distributed", sharding="fsdp", comm_hook="fp16")
    with pytest.raises(ConfigError, match="its own communication hook"):
        DistributedConfig.checked("train.distributed", comm_hook="powersgd", local_sgd={"period": 4})
    with pytest.raises(ConfigError, match="warmup_steps must be >= 2"):
        DistributedConfig.checked("train.distributed", comm_hook="powersgd", powersgd={"warmup_steps": 1})
    # a default distributed section leaves the checkpoint fingerprint as it was
    assert TrainConfig(**BASE).fingerprint() == TrainConfig(**BASE, distributed={}).fingerprint()
    assert TrainConfig(**BASE).fingerprint() != TrainConfig(**BASE, distributed={"comm_hook": "fp16"}).fingerprint()


def test_warm_up_steps_count_from_the_start_of_training_after_a_resume():
    """PowerSGD / local SGD warm-ups are optimizer steps since the start: a run resumed past its
    warm-up has none left, and bytes per step after the warm-up must include every resumed step."""
    from frugalml.train.comm import CommMeter

    def meter(first_step: int) -> CommMeter:
        m = CommMeter()
        m.first_step = first_step
        step = {"grad_calls": 1, "average_bytes": 0, "average_calls": 0, "expected": 0, "buckets": 1}
        m.steps = [{**step, "grad_bytes": 1000}] * 3 + [{**step, "grad_bytes": 10}] * 3
        return m

    fresh = meter(0).summary(warmup_steps=3)  # steps 1-3 are the warm-up
    assert fresh["bytes_per_step_after_warmup"] == 10 and "resumed_after_step" not in fresh
    late = meter(50).summary(warmup_steps=3)  # resumed after step 50: every recorded step is past it
    assert late["bytes_per_step_after_warmup"] == round((3 * 1000 + 3 * 10) / 6)
    assert late["resumed_after_step"] == 50
    assert meter(1).summary(warmup_steps=3)["bytes_per_step_after_warmup"] == round((1000 + 3 * 10) / 4)


class _Failure:
    """What torchrun's agent records of a failed process (exit code, signal name, time)."""

    def __init__(self, exitcode: int, signal: str, timestamp: int) -> None:
        self.exitcode, self._signal, self.timestamp = exitcode, signal, timestamp

    def signal_name(self) -> str:
        return self._signal


def test_the_killed_rank_is_named_even_when_its_peer_aborted_first():
    """A peer's gloo abort (SIGABRT on "connection reset") can be recorded before the SIGKILL that
    caused it; the kill is the root cause. A signal outranks an exit code, except the agent's own
    SIGTERM to the survivors; within a tier the earliest failure is named."""
    from frugalml.train.launch import _root_cause

    assert _root_cause({0: _Failure(-6, "SIGABRT", 100), 1: _Failure(-9, "SIGKILL", 101)})[0] == 1
    assert _root_cause({0: _Failure(1, "", 100), 1: _Failure(-6, "SIGABRT", 101)})[0] == 1
    assert _root_cause({0: _Failure(-15, "SIGTERM", 101), 1: _Failure(1, "", 100)})[0] == 1
    assert _root_cause({0: _Failure(-11, "SIGSEGV", 102), 1: _Failure(-9, "SIGKILL", 101)})[0] == 1
