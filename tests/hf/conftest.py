"""A tiny BERT-style model written to a folder the way Hugging Face ships one (config.json,
safetensors weights, vocab.txt, sentence-transformers pooling files), and a text file of sentences
built from its vocabulary: no download, and token ids above 2048 (which fp16 cannot hold exactly)."""

from __future__ import annotations

import json
import random

import pytest
import torch

transformers = pytest.importorskip("transformers")

VOCAB = 3000  # ids up to 2999: beyond fp16's exact integers (2048)
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _words() -> list[str]:
    return [f"w{i}" for i in range(VOCAB - len(SPECIAL))]


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = BertModel(cfg)  # with a pooler, as checkpoints ship it: frugalml must leave it out
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    cfg.to_json_file(str(folder / "config.json"))
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + _words()) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                              "do_lower_case": True}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return folder


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    words = _words()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) for _ in range(80)]
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def text_data(bert_dir, corpus):
    from frugalml.data import DataConfig, load_data

    return load_data(DataConfig(name=f"text:{corpus}", tokenizer=f"hf:{bert_dir}", max_length=16))


@pytest.fixture(scope="session")
def encoder(bert_dir):
    from frugalml.models import build_model

    return build_model(f"hf:{bert_dir}", (16,), 32).eval()


@pytest.fixture(scope="session")
def bound(text_data, encoder):
    """The text data with the tiny encoder's embeddings as targets (what a run's first stage does)."""
    import copy

    from frugalml.measure.task import bind_reference

    data = copy.deepcopy(text_data)
    bind_reference(data, encoder, "stage teacher")
    return data
