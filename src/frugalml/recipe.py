"""Recipes: YAML that maps 1:1 onto the typed configs, validated with readable one-line errors.

The schema is generated from the registered stage configs (`frugalml.stages.STAGES`), so a new
technique appears in recipes the moment its config is registered.
"""

from __future__ import annotations

import importlib
import importlib.resources
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from frugalml.config import Config
from frugalml.errors import ConfigError
from frugalml.stages import stage_configs

# Modules whose import registers stage kinds. A technique adds itself here once.
STAGE_MODULES = (
    "frugalml.builtin_stages",
    "frugalml.compress.prune",
    "frugalml.compress.quantize",
)

DEFAULT_RECIPE = "default.yaml"


def load_stage_modules() -> None:
    for name in STAGE_MODULES:
        importlib.import_module(name)


class _RecipeBase(Config):
    name: str = "run"
    seed: int = 0

    @model_validator(mode="after")
    def _check_stage_graph(self):  # type: ignore[no-untyped-def]
        stages = getattr(self, "stages", [])
        seen: set[str] = set()
        for i, st in enumerate(stages):
            if st.name is None:
                base, k = st.kind, 2
                st.name = base
                while st.name in seen:
                    st.name, k = f"{base}-{k}", k + 1
            if st.name in seen:
                raise ValueError(f"stages.{i}.name: duplicate stage name {st.name!r}")
            if st.parent is not None and st.parent not in seen:
                raise ValueError(
                    f"stages.{i}.parent: {st.parent!r} is not an earlier stage; "
                    f"allowed: {', '.join(sorted(seen)) or '(none: this is the first stage)'}"
                )
            seen.add(st.name)
        if stages and getattr(stages[0], "kind", None) not in ("train", "load"):
            raise ValueError("stages.0.kind: the first stage must make a model: 'train' or 'load'")
        return self


@cache
def recipe_model() -> type[BaseModel]:
    """The Recipe pydantic model, built from the configs registered at import time."""
    from frugalml.data import DataConfig
    from frugalml.measure import MeasureConfig
    from frugalml.models import ModelConfig
    from frugalml.train import TrainConfig

    load_stage_modules()
    configs = tuple(stage_configs())
    stage_union = Annotated[Union[configs], Field(discriminator="kind")]  # noqa: UP007
    return create_model(
        "Recipe",
        __base__=_RecipeBase,
        data=(DataConfig, DataConfig()),
        model=(ModelConfig, ModelConfig()),
        train=(TrainConfig, TrainConfig()),
        measure=(MeasureConfig, MeasureConfig()),
        stages=(list[stage_union], Field(min_length=1)),
    )


def default_recipe_text() -> str:
    return importlib.resources.files("frugalml.recipes").joinpath(DEFAULT_RECIPE).read_text()


def _allowed_keys(model_cls: type[BaseModel]) -> list[str]:
    return sorted(model_cls.model_fields)


def _model_at(root: type[BaseModel], raw: Any, loc: tuple) -> type[BaseModel] | None:
    """The config class whose fields live at `loc` (for 'allowed keys' hints)."""
    from frugalml.stages import STAGES

    cls: Any = root
    node = raw
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and node.get("kind") in STAGES:
                cls = STAGES.get(node["kind"])[0]
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        ann = cls.model_fields[part].annotation
        node = node.get(part) if isinstance(node, dict) else None
        inner = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        cls = inner[0] if inner else ann
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _clean_loc(loc: tuple, raw: Any) -> tuple:
    """Drop pydantic's union-tag parts (e.g. ('stages', 1, 'prune', 'ratio') -> ('stages', 1, 'ratio'))."""
    out, node = [], raw
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str) and part not in node and node.get("kind") == part:
            continue
        if isinstance(part, str) and part.startswith(("function-", "union[", "literal[")):
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


def format_validation_error(err: ValidationError, raw: Any, source: str) -> str:
    lines = []
    root = recipe_model()
    for e in err.errors():
        loc = _clean_loc(tuple(e["loc"]), raw)
        key = ".".join(str(p) for p in loc) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            cls = _model_at(root, raw, loc[:-1])
            allowed = ", ".join(_allowed_keys(cls)) if cls else "?"
            msg = f"unknown key; allowed keys here: {allowed}"
        elif e["type"] == "union_tag_invalid":
            from frugalml.stages import STAGES

            msg = f"unknown stage kind {e['input'].get('kind')!r}; allowed: {', '.join(STAGES.names())}"
        elif e["type"] == "union_tag_not_found":
            from frugalml.stages import STAGES

            msg = f"missing 'kind'; allowed: {', '.join(STAGES.names())}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            if msg.startswith(("stages.", "data.", "model.", "train.")):
                key, _, msg = msg.partition(": ")
        if "input" in e and e["type"] not in ("extra_forbidden", "missing") and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines[:5]) + (f"\n... and {len(lines) - 5} more" if len(lines) > 5 else "")


def parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply `key.path=value` overrides (list items by index: `stages.1.ratio=0.5`)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source} {item!r}: expected key.path=value")
        path, _, value = item.partition("=")
        parts = path.strip().split(".")
        node: Any = raw
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            where = ".".join(parts[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{source} {path}: {where} is not an index of a list of {len(node)}")
                if last:
                    node[int(part)] = parse_value(value)
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = parse_value(value)
                else:
                    node = node.setdefault(part, {})
            else:
                raise ConfigError(f"{source} {path}: {'.'.join(parts[:i])} is a value, not a section")
    return raw


def load_recipe_text(text: str, source: str, overrides: list[str] | None = None) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}:{where} not valid YAML ({getattr(e, 'problem', e)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a recipe is a mapping with keys data, model, train, measure, stages")
    raw = apply_overrides(raw, overrides or [])
    try:
        return recipe_model().model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, raw, source)) from None


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> tuple[Config, str]:
    """Load a recipe file (None → the built-in default). Returns (recipe, source name)."""
    if path is None:
        return load_recipe_text(default_recipe_text(), "default recipe", overrides), "default"
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: recipe file not found")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read recipe ({e})") from None
    return load_recipe_text(text, str(p), overrides), str(p)


def dump_recipe(recipe: Config) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
