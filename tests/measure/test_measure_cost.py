import torch
import torch.nn as nn
import torch.nn.utils.prune as prune
from torch.nn.utils import parametrize

from frugalml.measure import count_flops, count_params


def test_params_and_nonzero_after_zeroing():
    m = nn.Sequential(nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 2))
    expected = 10 * 6 + 6 + 6 * 2 + 2
    assert count_params(m) == (expected, expected)
    with torch.no_grad():
        m[0].weight[:3].zero_()  # 30 weights
        m[2].bias.zero_()  # 2 biases
    assert count_params(m) == (expected, expected - 32)


def test_tied_weights_counted_once():
    emb = nn.Linear(4, 4, bias=False)
    m = nn.Sequential(emb, nn.ReLU(), emb)
    assert count_params(m) == (16, 16)


def test_prune_and_parametrize_use_effective_weight():
    m = nn.Linear(8, 4)
    prune.l1_unstructured(m, "weight", amount=0.5)  # weight_orig + weight_mask, weight = orig * mask
    assert count_params(m) == (36, 36 - 16)

    class Half(nn.Module):
        def forward(self, w):
            return torch.cat([w[:2], torch.zeros_like(w[2:])])

    p = nn.Linear(8, 4, bias=False)
    parametrize.register_parametrization(p, "weight", Half())
    assert count_params(p) == (32, 16)


def test_linear_and_conv_macs_match_analytic():
    lin = count_flops(nn.Linear(20, 7), torch.randn(1, 20))
    assert lin["macs"] == 20 * 7 and lin["flops"] == 2 * 20 * 7
    assert lin["flops_method"] == "torch.utils.flop_counter"

    conv = nn.Conv2d(3, 8, 3, padding=1)
    c = count_flops(conv, torch.randn(1, 3, 10, 10))
    assert c["macs"] == 8 * 10 * 10 * 3 * 3 * 3

    grouped = nn.Conv2d(4, 8, 3, groups=2)  # valid padding: 6x6 output
    g = count_flops(grouped, torch.randn(1, 4, 8, 8))
    assert g["macs"] == 8 * 6 * 6 * (4 // 2) * 9


def test_lstm_uses_documented_analytic_fallback():
    lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True).eval()
    r = count_flops(lstm, torch.randn(1, 5, 8))
    per_step = 4 * 16 * (8 + 16) + 4 * 16 * (16 + 16)
    assert r["macs"] == 5 * per_step
    assert "analytic hooks for LSTM" in r["flops_method"]
    assert not lstm._forward_hooks and not lstm._forward_pre_hooks


def test_lstm_fallback_agrees_with_counted_lstm_cells():
    # LSTMCell decomposes into matmuls the flop counter sees: the two must agree
    cell = nn.LSTMCell(8, 16)
    counted = count_flops(cell, torch.randn(1, 8))["macs"]
    lstm = count_flops(nn.LSTM(8, 16), torch.randn(1, 1, 8))
    assert lstm["macs"] == counted == 4 * 16 * (8 + 16)


def test_gru_counted_natively():
    r = count_flops(nn.GRU(8, 16, batch_first=True), torch.randn(1, 5, 8))
    assert r["macs"] == 5 * 3 * 16 * (8 + 16)


def test_ao_dynamic_quantized_linear_falls_back():
    import warnings

    from torch.ao.quantization import quantize_dynamic

    m = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(m, {nn.Linear}, dtype=torch.qint8)
    r = count_flops(q, torch.randn(1, 16))
    assert r["macs"] == 16 * 8 + 8 * 4
    assert "DynamicQuantizedLinear" in r["flops_method"] or "Linear" in r["flops_method"]
    params, nonzero = count_params(q)
    assert params == 16 * 8 + 8 + 8 * 4 + 4 and 0 < nonzero <= params


def test_every_zoo_model_is_counted():
    import pytest

    models = pytest.importorskip("frugalml.models")
    for name in models.list_models():
        m = models.build_model(name, (1, 16, 16), 4).eval()
        r = count_flops(m, torch.randn(1, 1, 16, 16))
        params, nonzero = count_params(m)
        assert r["macs"] > 0 and r["flops"] == 2 * r["macs"], name
        assert params == sum(p.numel() for p in m.parameters()) and 0 < nonzero <= params, name
        assert all(not mod._forward_hooks and not mod._forward_pre_hooks for mod in m.modules()), name
