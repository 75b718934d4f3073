"""What `frugal run --resume` compares to tell the same recipe from another: `recipe_hash`."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from frugalml.recipe import Recipe
from frugalml.train.config import _Overrides


def _as_written(value: Any) -> Any:
    """`value` (a config, or what it holds) as JSON without the fields left at their defaults; one-value
    Literal fields (the `kind:` / `type:` tags that say which config class it is) are always kept."""
    if isinstance(value, _Overrides):  # every key given counts: an explicit null there means "clear"
        return {k: _as_written(getattr(value, k)) for k in sorted(value.model_fields_set)}
    if isinstance(value, BaseModel):
        out = {}
        for name, field in type(value).model_fields.items():
            v = getattr(value, name)
            tag = get_origin(field.annotation) is Literal and len(get_args(field.annotation)) == 1
            given = isinstance(v, _Overrides) and bool(v.model_fields_set)  # equal to an empty one, yet not
            if tag or given or field.is_required() or v != field.get_default(call_default_factory=True):
                out[name] = _as_written(v)
        return out
    if isinstance(value, dict):
        return {str(k): _as_written(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_written(v) for v in value]
    return to_jsonable_python(value)


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def recipe_hash(recipe: Recipe) -> str:
    """What `--resume` compares: the recipe's values that differ from the defaults, so a config field
    added in a later version (at a default that keeps the old behaviour) does not orphan a run folder.
    The other side of that choice: a default changed by a later version does not change the hash either,
    so such a change must be treated as breaking (release notes), as it is for every user's recipe."""
    return _digest(_as_written(recipe))


def legacy_recipe_hash(recipe: Recipe) -> str:
    """The hash of every value, defaults included, that run folders written before 2026-12-03 hold."""
    return _digest(recipe.model_dump(mode="json"))
