"""The `data:` section of a recipe; the same class is the Python API of `load_data`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from frugalml.config import NamedConfig


class DataConfig(NamedConfig):
    """Which dataset to load and how to split, cap and normalize it.

    `name` is a spec: `digits`, `fashion-mnist`, `idx:DIR`, `folder:DIR`, `synthetic`, or text:
    `fortunes` (Debian's fortunes package) and `text:FILE` (see `frugalml.data.list_datasets()`). The split seed only changes which samples land in
    val/test/limit; the data itself (synthetic included) is the same for every seed.
    """

    name: str = "digits"
    root: str | None = None  # directory for fashion-mnist (or idx:/folder: when no DIR is given)
    image_size: int | None = Field(default=None, ge=1)  # folder datasets; default 32
    channels: Literal[1, 3] | None = None  # folder datasets: 1 (grayscale) or 3 (RGB); default 3
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    seed: int = 0
    normalize: bool = True
    limit: int | None = Field(default=None, ge=1)  # cap on train samples, for quick runs
    synthetic_samples: int = Field(default=512, ge=2)
    synthetic_classes: int = Field(default=4, ge=2)
    synthetic_shape: tuple[int, int, int] = (1, 8, 8)
    # few labels (frugalml.data.fewlabel): keep N labels per class of the training split, seeded and
    # stratified; the rest of the training split becomes the unlabelled pool (its true labels are kept
    # only to measure pseudo-label precision, never trained on)
    labels_per_class: int | None = Field(default=None, ge=1)
    # fraction of the (labelled) training labels flipped at random to another class, for label-noise studies
    label_noise: float = Field(default=0.0, ge=0.0, lt=1.0)
    # text sources (fortunes, text:FILE; frugalml.data.text): the tokenizer (an hf: model source whose
    # tokenizer files are read offline), the padded sequence length, and a cap on the texts read
    tokenizer: str | None = None
    max_length: int = Field(default=128, ge=2, le=8192)
    max_texts: int | None = Field(default=None, ge=3)
    # what max_texts caps: `all` splits (the default), or only the `eval` pool that test and val are drawn
    # from, every text beyond it joining train: more distillation text, the same test and val texts
    max_texts_scope: Literal["all", "eval"] = "all"
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)  # text sources: the evaluation share of the texts
    # what quality means (frugalml.measure.task): default classification for labelled data, embedding for
    # unlabelled text (cosine and recall@10 against the first stage's model)
    task: Literal["classification", "embedding", "regression"] | None = None

    @field_validator("name")
    @classmethod
    def _known_source(cls, v: str) -> str:
        from frugalml.data.load import DATASETS  # sources register when frugalml.data.load is imported

        prefix, sep, arg = v.partition(":")
        if prefix not in DATASETS:
            usages = ", ".join(src.usage for _, src in DATASETS.items())
            raise ValueError(f"unknown dataset {v!r}; allowed: {usages}")
        if sep and not DATASETS.get(prefix).takes_path:
            raise ValueError(f"dataset {prefix!r} takes no ':DIR' part (got {v!r})")
        if sep and not arg:
            raise ValueError(f"{v!r} needs a directory after the colon, e.g. {prefix}:path/to/data")
        return v
