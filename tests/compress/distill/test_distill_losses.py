"""KD, DKD and DIST against values computed by hand (plain-Python reference formulas, no torch)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from frugalml.compress.distill import (
    DIST,
    DKD,
    KD,
    LogitDistillTerm,
    dist_loss,
    dkd_loss,
    kd_loss,
    logit_loss,
)


def _softmax(v: list[float]) -> list[float]:
    m = max(v)
    e = [math.exp(x - m) for x in v]
    return [x / sum(e) for x in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * (math.log(a) - math.log(b)) for a, b in zip(p, q) if a > 0)


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


S = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]
T = [[3.0, 2.0, 1.0], [1.5, 0.0, -0.5]]
Y = [0, 2]


def test_kd_matches_the_hand_computed_value():
    # KL(softmax([3,2,1]) || softmax([1,2,3])) = 1.15042...; at T=2 it is scaled by T^2 = 4
    s, t = torch.tensor([S[0]]), torch.tensor([T[0]])
    assert kd_loss(s, t, 1.0).item() == pytest.approx(1.1504207652, rel=1e-6)
    assert kd_loss(s, t, 2.0).item() == pytest.approx(1.2806266713, rel=1e-6)
    both = sum(_kl(_softmax([x / 3 for x in t_]), _softmax([x / 3 for x in s_])) for s_, t_ in zip(S, T)) / 2 * 9
    assert kd_loss(torch.tensor(S), torch.tensor(T), 3.0).item() == pytest.approx(both, rel=1e-6)
    assert kd_loss(torch.tensor(S), torch.tensor(S), 4.0).item() == pytest.approx(0.0, abs=1e-7)


def _dkd_reference(s: list[float], t: list[float], y: int, alpha: float, beta: float, temp: float) -> float:
    ps, pt = _softmax([x / temp for x in s]), _softmax([x / temp for x in t])
    tckd = _kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
    qs = _softmax([x / temp for i, x in enumerate(s) if i != y])
    qt = _softmax([x / temp for i, x in enumerate(t) if i != y])
    return temp**2 * (alpha * tckd + beta * _kl(qt, qs))


@pytest.mark.parametrize("alpha,beta,temp", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_the_hand_computed_value(alpha, beta, temp):
    want = sum(_dkd_reference(s, t, y, alpha, beta, temp) for s, t, y in zip(S, T, Y)) / len(S)
    got = dkd_loss(torch.tensor(S), torch.tensor(T), torch.tensor(Y), alpha, beta, temp)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_dkd_with_alpha_beta_equal_to_the_target_weight_is_plain_kd():
    # the paper's identity: KD = TCKD + (1 - p_t^teacher) * NCKD, per sample
    s, t, y = torch.tensor([S[0]]), torch.tensor([T[0]]), torch.tensor([Y[0]])
    pt_target = F.softmax(t / 2.0, dim=1)[0, Y[0]].item()
    assert dkd_loss(s, t, y, 1.0, 1.0 - pt_target, 2.0).item() == pytest.approx(kd_loss(s, t, 2.0).item(), rel=1e-5)


def test_dist_matches_the_hand_computed_value():
    temp, beta, gamma = 2.0, 1.0, 3.0
    ps = [_softmax([x / temp for x in s]) for s in S]
    pt = [_softmax([x / temp for x in t]) for t in T]
    inter = 1 - sum(_pearson(a, b) for a, b in zip(ps, pt)) / len(S)
    cols = range(len(S[0]))
    intra = 1 - sum(_pearson([p[c] for p in ps], [p[c] for p in pt]) for c in cols) / len(S[0])
    want = temp**2 * (beta * inter + gamma * intra)
    assert dist_loss(torch.tensor(S), torch.tensor(T), beta, gamma, temp).item() == pytest.approx(want, rel=1e-4)
    assert dist_loss(torch.tensor(S), torch.tensor(S), 1.0, 1.0, 1.0).item() == pytest.approx(0.0, abs=1e-5)


def test_dkd_warms_up_linearly():
    s, t, y = torch.tensor(S), torch.tensor(T), torch.tensor(Y)
    full = logit_loss(DKD(warmup_epochs=4), s, t, y, epoch=10).item()
    assert logit_loss(DKD(warmup_epochs=4), s, t, y, epoch=1).item() == pytest.approx(full / 4, rel=1e-6)
    assert logit_loss(DKD(warmup_epochs=0), s, t, y, epoch=1).item() == pytest.approx(full, rel=1e-6)


@pytest.mark.parametrize("cfg", [KD(alpha=1.0), KD(alpha=0.3, temperature=2.0), DKD(ce_weight=0.5), DIST(ce_weight=0.0)])
def test_the_term_rescales_the_trainers_cross_entropy_to_the_methods_weight(cfg):
    s, t, y = torch.tensor(S, requires_grad=True), torch.tensor(T), torch.tensor(Y)
    term = LogitDistillTerm(cfg, lambda x: t, label_smoothing=0.1)
    ce = F.cross_entropy(s, y, label_smoothing=0.1)
    total = ce + term(None, None, y, s)  # what the Trainer computes
    want = cfg.ce_weight * ce + logit_loss(cfg, s, t, y)
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    (g_total,) = torch.autograd.grad(total, s, retain_graph=True)
    (g_want,) = torch.autograd.grad(want, s)
    assert torch.allclose(g_total, g_want, atol=1e-6)


def test_unlabelled_and_soft_targets_give_dkd_hard_labels():
    s, t = torch.tensor(S), torch.tensor(T)
    soft = F.one_hot(torch.tensor(Y), 3).float()
    unl = torch.tensor([-100, 2])  # the first takes the teacher's prediction (class 0)
    base = logit_loss(DKD(warmup_epochs=0), s, t, torch.tensor(Y))
    assert logit_loss(DKD(warmup_epochs=0), s, t, soft).item() == pytest.approx(base.item(), rel=1e-6)
    assert logit_loss(DKD(warmup_epochs=0), s, t, unl).item() == pytest.approx(base.item(), rel=1e-6)
