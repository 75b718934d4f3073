"""Every recipe shipped in recipes/ validates as written: a typo in a key, a stage kind or a parent
name in a benchmark recipe is found here, not an hour into a benchmark run. (Loading checks the
configs only; stages that load earlier runs' artifacts are not executed.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from frugalml.optimize.config import search_config
from frugalml.optimize.space import check_space
from frugalml.recipe import load_recipe, read_recipe_mapping, recipe_from_mapping

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def test_the_recipes_folder_is_found():
    assert len(RECIPES) >= 10, RECIPES


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_a_shipped_recipe_validates(path: Path):
    if "search" in (yaml.safe_load(path.read_text()) or {}):  # `frugal optimize`'s recipes
        raw, src = read_recipe_mapping(str(path)), str(path)
        cfg = search_config(raw.pop("search"), {"budget": "1m"})
        if not cfg.default_space:
            check_space(cfg.space)
        recipe = recipe_from_mapping(raw, src)
    else:
        recipe, _ = load_recipe(str(path), [])
    names = [s.name for s in recipe.stages]
    assert recipe.stages and len(set(names)) == len(names)
