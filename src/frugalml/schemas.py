"""Schemas of every JSON file frugalml reads back: model.json, state.json, metrics.json,
results.json and checkpoint state. Reading one validates it; any problem (not JSON, wrong type,
missing key, an absurd shape) is one ArtifactError naming the file and the key.

Only what frugalml relies on is declared; other keys pass through (files may grow new keys).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from frugalml.errors import ArtifactError

# an input of one sample may hold at most this many values (a 4096x4096 RGB image is 50M): a larger
# `input_shape` in a file is corrupt or hostile, and would allocate gigabytes on load
MAX_INPUT_ELEMENTS = 64 * 2**20
MAX_CLASSES = 1_000_000
SCHEMA_VERSION = 1  # results.json
ARTIFACT_VERSION = 1  # model.json

Positive = Annotated[int, Field(ge=1)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class ModelSpecSchema(_Open):
    name: str = Field(min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    input_shape: list[Positive] = Field(min_length=1, max_length=4)
    num_classes: int = Field(ge=1, le=MAX_CLASSES)

    @field_validator("input_shape")
    @classmethod
    def _not_absurd(cls, v: list[int]) -> list[int]:
        if math.prod(v) > MAX_INPUT_ELEMENTS:
            raise ValueError(f"{v} holds {math.prod(v):,} values per sample (limit {MAX_INPUT_ELEMENTS:,})")
        return v


class ModelInfo(_Open):
    frugalml_artifact: int = Field(ge=1, le=ARTIFACT_VERSION)
    format: str = "torch-fp32"
    spec: ModelSpecSchema
    module_attributes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    aliases: dict[str, str] = Field(default_factory=dict)


class RunState(_Open):
    recipe_hash: str
    completed: list[str] = Field(default_factory=list)
    started: str | None = None


class LatencyStats(_Open):
    median: float
    p90: float | None = None


class StageMetrics(_Open):
    accuracy: float | None = None
    latency_ms: dict[str, LatencyStats] | None = None
    size_bytes: int | None = None


class StageResult(_Open):
    name: str
    kind: str
    parent: str | None = None
    metrics: StageMetrics


class Results(_Open):
    schema_: int = Field(alias="schema", ge=1)
    stages: list[StageResult]

    @field_validator("schema_")
    @classmethod
    def _known_schema(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(f"schema {v} is newer than this frugalml understands ({SCHEMA_VERSION}); upgrade frugalml")
        return v


class CheckpointState(_Open):
    epoch: int = Field(ge=0)
    step: int = Field(ge=0)
    stop: bool = False
    stopped_early: bool = False
    config_hash: str
    history: list[dict[str, Any]] = Field(default_factory=list)
    scheduler: dict[str, Any]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    extensions: dict[str, dict[str, Any]] = Field(default_factory=dict)
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = Field(0, ge=0)


def read_json(path: Path, schema: type[BaseModel], missing: str | None = None) -> dict:
    """The JSON object in `path`, validated by `schema`, returned as it was written (a plain dict)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(missing or f"{path}: file not found")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: corrupt {path.name} (not JSON: {e})") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(raw, dict):
        raise ArtifactError(f"{path}: corrupt {path.name} (expected a JSON object, got {type(raw).__name__})")
    try:
        schema.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        got = first.get("input")
        shown = "" if first["type"] == "missing" or isinstance(got, (dict, list)) else f" (got {got!r:.60})"
        raise ArtifactError(f"{path}: corrupt {path.name}: {key}: {first['msg']}{shown}") from None
    return raw


def read_model_json(path: Path) -> dict:
    raw = read_json(path, ModelInfo, f"{path.parent}: not a frugalml artifact (no model.json)")
    raw.setdefault("format", "torch-fp32")
    return raw
