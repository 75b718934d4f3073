"""hf: models and text data: loading offline, the sentence-transformers pooling, the ModelSpec that
rebuilds them, and integer inputs kept exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from frugalml import artifact
from frugalml.data.features import Features
from frugalml.errors import ArtifactError, ConfigError
from frugalml.models import build_model


def test_text_data_is_named_int64_tensors_split_three_ways(text_data):
    x = text_data.x_train
    assert isinstance(x, Features) and x.names == ["input_ids", "attention_mask"]
    assert x["input_ids"].dtype == torch.int64 and x.shape[1] == 16 and text_data.input_shape == (16,)
    assert text_data.task == "embedding" and not text_data.has_targets
    assert len(text_data.y_test) == len(text_data.x_test) and text_data.y_test.shape[1] == 0
    assert int(x["input_ids"].max()) > 2048
    assert sum(len(text_data.split(w)[0]) for w in ("train", "val", "test")) == 80


def test_max_texts_scope_eval_keeps_test_and_val_and_gives_every_other_text_to_train(bert_dir, corpus):
    from frugalml.data import DataConfig, load_data

    def load(**kw):
        cfg = DataConfig(name=f"text:{corpus}", tokenizer=f"hf:{bert_dir}", max_length=16, max_texts=40, **kw)
        return load_data(cfg)

    capped, scoped = load(), load(max_texts_scope="eval")
    assert scoped.texts["test"] == capped.texts["test"] and scoped.texts["val"] == capped.texts["val"]
    assert set(capped.texts["train"]) < set(scoped.texts["train"])
    every = sorted(t for w in ("train", "val", "test") for t in scoped.texts[w])
    assert every == sorted(corpus.read_text().split("\n")[:-1])  # each of the 80 texts exactly once
    held_out = len(capped.texts["test"]) + len(capped.texts["val"])
    assert len(scoped.x_train) == len(scoped.texts["train"]) == 80 - held_out


def test_encoder_matches_transformers_forward_with_padding(bert_dir, encoder, text_data):
    from transformers import BertModel

    assert encoder.backbone.pooler is None  # the checkpoint's pooler is dead weight for embeddings
    assert encoder.pooling == "mean" and encoder.normalize
    reference = BertModel.from_pretrained(str(bert_dir), attn_implementation="eager").eval()
    x = text_data.x_test[:6]
    assert int(x["attention_mask"].sum()) < x["attention_mask"].numel()  # the batch has padding
    with torch.no_grad():
        hidden = reference(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).last_hidden_state
        m = x["attention_mask"][..., None].float()
        expected = F.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
        torch.testing.assert_close(encoder(x), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(encoder(x["input_ids"], x["attention_mask"]), expected, atol=1e-5, rtol=1e-4)


def test_spec_rebuilds_offline_and_artifact_round_trips(encoder, text_data, tmp_path):
    spec = encoder.frugal_spec
    assert spec["name"].startswith("hf:") and spec["num_classes"] == 32 and spec["kwargs"]["config"]["hidden_size"] == 32
    artifact.save(encoder, tmp_path / "a")
    with pytest.raises(ArtifactError, match="transformers"):
        artifact.load(tmp_path / "a")  # hf: specs follow the trust rules of user factories
    loaded = artifact.load(tmp_path / "a", trust_code=True)
    x = text_data.x_test[:4]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), encoder(x))


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such folder"):
        build_model("hf:no_such_model_package_here", (16,), 1)
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_size": 8, "num_attention_heads": 2, '
                                          '"intermediate_size": 8, "num_hidden_layers": 1, "vocab_size": 50}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ConfigError, match="pickle"):
        build_model(f"hf:{tmp_path}", (16,), 1)


def test_fp16_keeps_int64_token_ids_exact(encoder, bound):
    from frugalml.compress.quantize import QuantizeStage, quantize

    q = quantize(encoder, QuantizeStage(mode="fp16", backend="torch", references=[]), bound,
                 measure=_fast())
    seen = []
    q.module.backbone.embeddings.word_embeddings.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    x = bound.x_test[:4]
    out = q(x)
    assert seen and seen[0].dtype == torch.int64 and torch.equal(seen[0], x["input_ids"])
    assert int(x["input_ids"].max()) > 2048 and out.dtype == torch.float32
    with torch.no_grad():
        assert float(F.cosine_similarity(out, encoder(x)).min()) > 0.99


def _fast():
    from frugalml.measure import MeasureConfig

    return MeasureConfig(batch_sizes=[2], warmup_iters=1, warmup_seconds=0, iters=2, min_seconds=0, threads=1,
                         references=[])
