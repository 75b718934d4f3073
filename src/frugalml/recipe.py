"""Recipes: YAML that maps 1:1 onto the typed configs, validated with readable one-line errors.

`Recipe` is a plain config class; its `stages:` entries are the union of the registered stage
configs (`frugalml.stages`), so a new technique appears in recipes the moment its config is
registered. A recipe may start from another with `extends: other.yaml` (a path relative to the
recipe): mappings are merged key by key, anything else (lists such as `stages`, values) is replaced.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from frugalml.config import Config, SafeName
from frugalml.data import DataConfig
from frugalml.errors import ConfigError
from frugalml.measure.config import MeasureConfig
from frugalml.models import ModelConfig
from frugalml.stages import StageConfig, stage_kinds, stage_union
from frugalml.train import TrainConfig

DEFAULT_RECIPE = "default.yaml"
MAX_EXTENDS_DEPTH = 8

StageSpec = stage_union()


class Recipe(Config):
    """A run: which data and model, how to train and measure, and the stages in order."""

    name: SafeName = "run"
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    measure: MeasureConfig = MeasureConfig()
    stages: list[StageSpec] = Field(min_length=1)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _check_stage_graph(self) -> Recipe:
        seen: set[str] = set()
        for i, st in enumerate(self.stages):
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
        first = self.stages[0] if self.stages else None
        # a stage makes a model when it starts fresh (load, transfer, ...) or is a train/semisup stage
        if first is not None and first.kind not in ("train", "semisup") and not first.starts_fresh():
            raise ValueError("stages.0.kind: the first stage must make a model: 'train', 'load', 'transfer', "
                             "'semisup' or 'label_issues'")
        return self

    def user_factories(self) -> frozenset[str]:
        """`package.module:factory` names this recipe itself asks to build: trusted by its run."""
        names = {self.model.name} | {getattr(getattr(s, "model", None), "name", "") for s in self.stages}
        return frozenset(n for n in names if ":" in n)


# --- YAML with duplicate keys refused ------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (YAML keeps the last silently)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value",
                                                    key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}:{where} not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML (nested too deeply)") from None


# --- validation errors as one line per problem ---------------------------------------------------


def _model_at(raw: Any, loc: tuple) -> type[BaseModel] | None:
    """The config class whose fields live at `loc` (for 'allowed keys' hints)."""
    cls: Any = Recipe
    node = raw
    for part in loc:
        if isinstance(part, int):
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict):
                cls = _stage_class(node) or cls
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None
        ann = cls.model_fields[part].annotation
        node = node.get(part) if isinstance(node, dict) else None
        inner = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        cls = inner[0] if inner else ann
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _stage_class(node: dict) -> type[StageConfig] | None:
    kind = stage_kinds().get(node.get("kind"))  # type: ignore[arg-type]
    if kind is None:
        return None
    if kind.variant_key is None:
        return kind.config
    return kind.variants.get(node.get(kind.variant_key, kind.default_variant), kind.config)


def _clean_loc(loc: tuple, raw: Any) -> tuple:
    """Drop pydantic's union-tag parts (e.g. ('stages', 1, 'prune', 'structured', 'ratio') ->
    ('stages', 1, 'ratio')): right after a list index come at most the kind tag, then the variant tag."""
    out: list = []
    node, tags = raw, []
    for part in loc:
        if tags and part == tags[0]:
            tags.pop(0)
            continue
        tags = []
        if isinstance(part, str) and part.startswith(("function-", "union[", "literal[")):
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            if isinstance(node, dict):
                kind = stage_kinds().get(node.get("kind"))  # type: ignore[arg-type]
                tags = [node.get("kind")]
                if kind is not None and kind.variant_key:
                    tags.append(node.get(kind.variant_key, kind.default_variant))
        else:
            node = None
    return tuple(out)


def _tag_message(e: dict, loc: tuple, raw: Any) -> tuple[tuple, str]:
    """Which key a union tag error is about, and its allowed values."""
    node: Any = raw
    for part in loc:
        node = node.get(part) if isinstance(node, dict) else node[part] if isinstance(node, list) else None
    kind = stage_kinds().get(node.get("kind")) if isinstance(node, dict) else None
    if kind is not None and kind.variant_key:  # the second-level tag
        key, allowed = kind.variant_key, list(kind.variants)
    else:
        key, allowed = "kind", list(stage_kinds())
    value = node.get(key) if isinstance(node, dict) else None
    what = f"unknown {key} {value!r}" if value is not None else f"missing '{key}'"
    return (*loc, key), f"{what}; allowed: {', '.join(allowed)}"


def format_validation_error(err: ValidationError, raw: Any, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = _clean_loc(tuple(e["loc"]), raw)
        msg = e["msg"]
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc, msg = _tag_message(e, loc, raw)
        elif e["type"] == "extra_forbidden":
            cls = _model_at(raw, loc[:-1])
            msg = f"unknown key; allowed keys here: {', '.join(sorted(cls.model_fields)) if cls else '?'}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            if msg.startswith(("stages.", "data.", "model.", "train.")):
                key, _, msg = msg.partition(": ")
                loc = (key,)
        elif e["type"] == "model_type" or e["type"] == "dict_type":
            msg = "expected a mapping of keys" + (" (or a name)" if loc and loc[-1] in ("data", "model") else "")
        key = ".".join(str(p) for p in loc) or "(top level)"
        shown = e.get("input")
        if e["type"] not in ("extra_forbidden", "missing", "union_tag_invalid", "union_tag_not_found") and \
                not isinstance(shown, (dict, list)):
            msg += f" (got {shown!r:.80})"
        lines.append(f"{source}: {key}: {msg}")
    return "\n".join(lines[:5]) + (f"\n... and {len(lines) - 5} more" if len(lines) > 5 else "")


# --- overrides, extends, loading ----------------------------------------------------------------------


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
                    nxt = node.get(part)
                    if isinstance(nxt, str) and part in ("data", "model"):  # short form `data: digits`
                        nxt = node[part] = {"name": nxt}
                    node = nxt if isinstance(nxt, (dict, list)) else node.setdefault(part, {})
                    if not isinstance(node, (dict, list)):
                        raise ConfigError(f"{source} {path}: {where} is a value, not a section")
            else:
                raise ConfigError(f"{source} {path}: {'.'.join(parts[:i])} is a value, not a section")
    return raw


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return over


def _resolve_extends(raw: dict, source: str, base_dir: Path | None, depth: int = 0) -> dict:
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"{source}: extends: expected the path of another recipe file")
    if base_dir is None:
        raise ConfigError(f"{source}: extends: only a recipe file can extend another (paths are relative to it)")
    if depth >= MAX_EXTENDS_DEPTH:
        raise ConfigError(f"{source}: extends: more than {MAX_EXTENDS_DEPTH} levels (a cycle?)")
    path = (base_dir / parent).resolve()
    base_raw = _read_mapping(path, f"{source}: extends")
    base_raw = _resolve_extends(base_raw, str(path), path.parent, depth + 1)
    return _merge(base_raw, raw)


def _read_mapping(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ConfigError(f"{what}: recipe file {path} not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read recipe ({e})") from None
    raw = parse_yaml(text, str(path))
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe is a mapping with keys data, model, train, measure, stages")
    return raw


def load_recipe_text(text: str, source: str, overrides: list[str] | None = None,
                     base_dir: Path | None = None) -> Recipe:
    raw = parse_yaml(text, source)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a recipe is a mapping with keys data, model, train, measure, stages")
    raw = _resolve_extends(raw, source, base_dir)
    raw = apply_overrides(raw, overrides or [])
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, raw, source)) from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply") from None


def default_recipe_text() -> str:
    return importlib.resources.files("frugalml.recipes").joinpath(DEFAULT_RECIPE).read_text()


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> tuple[Recipe, str]:
    """Load a recipe file (None → the built-in default). Returns (recipe, source name)."""
    if path is None:
        return load_recipe_text(default_recipe_text(), "default recipe", overrides), "default"
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, not a recipe file")
    if not p.is_file():
        raise ConfigError(f"{p}: recipe file not found")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot read recipe ({e})") from None
    return load_recipe_text(text, str(p), overrides, base_dir=p.parent), str(p)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def read_recipe_mapping(path: str | Path) -> dict:
    """A recipe file as a plain mapping with `extends` resolved, not yet validated: for tools that keep
    their own sections next to the recipe's (`frugal optimize` reads `search:` and removes it)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p}: is a directory, not a recipe file")
    return _resolve_extends(_read_mapping(p, str(p)), str(p), p.parent)


def recipe_from_mapping(raw: dict, source: str) -> Recipe:
    """Validate a recipe mapping (after `apply_overrides`), with the same one-line errors as a file."""
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, raw, source)) from None
