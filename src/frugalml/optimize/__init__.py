"""`frugal optimize`: search the stage chains frugalml has (pruning, low rank, quantization, runtimes)
for the cheapest pipeline within an accuracy budget, measured on this machine, with Optuna.

- `config`: the `search:` section (objectives, max_drop, budget, sampler); `space`: the search space
  (steps -> options -> stage templates with searched values); `defaults`: the default space for a
  model and its objectives.
- `trial`: one trial = a normal run folder (`run_recipe`) on a view of the data whose test split is
  the val split; `cache`: finished stages reused by every trial whose chain starts the same way.
- `study`: storage, sampler and the worker loop (resume, several workers, stale trials).
- `outputs`, `report`: front.json, best.yaml, the report; `run.optimize()` ties them together.

Optuna is an optional extra (`pip install 'frugalml[search]'`); nothing here imports it until used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SearchConfig", "optimize"]


def __getattr__(name: str) -> Any:  # lazy: `import frugalml.optimize` imports neither torch nor optuna
    if name == "optimize":
        from frugalml.optimize.run import optimize

        return optimize
    if name == "SearchConfig":
        from frugalml.optimize.config import SearchConfig

        return SearchConfig
    raise AttributeError(name)
