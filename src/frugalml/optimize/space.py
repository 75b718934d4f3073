"""The search space: steps applied in order; each trial picks one option per step; an option is a stage
template (the stage's own YAML keys) whose values may be searched.

    search:
      space:
        prune:                                   # a step: its options (one is picked per trial)
          none: {}                               # an empty template adds no stage
          structured:
            kind: prune
            method: structured
            macs_budget: {low: 0.2, high: 0.8, step: 0.05}   # a range (integers when low/high are)
            importance: [l1, taylor]                          # a list of plain values: one is picked
            finetune: {epochs: {low: 1, high: 12}, lr: 0.02, distill: [0.0, 1.0]}
        quantize:
          none: {}
          int8: {kind: quantize, mode: static, backend: auto, references: {fixed: []}}

Any other value is fixed; `{fixed: x}` keeps a list or mapping as it is; `{choose: {label: value}}`
picks one of named values (mappings too, which may hold ranges themselves). `{low, high}` may add
`step` and `log: true`. A user's `space` is merged over the default one key by key, and null removes
a step, an option or a key (the stage's default then applies). Optuna records each pick under its
path: the step (`prune`), then `prune.structured.macs_budget`.
"""

from __future__ import annotations

from typing import Any, Protocol

from frugalml.errors import ConfigError

RANGE_KEYS = {"low", "high", "step", "log"}
_SCALARS = (str, int, float, bool, type(None))


class Picker(Protocol):
    """What sampling needs from an Optuna trial (a `Corner` stands in to validate the space)."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float: ...


class Corner:
    """Picks the first choice and the low end (or the last and the high end) of everything."""

    def __init__(self, high: bool, fixed: dict[str, Any] | None = None) -> None:
        self.high, self.fixed = high, fixed or {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self.fixed.get(name, list(choices)[-1 if self.high else 0])

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return high - (high - low) % step if self.high else low

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return high if self.high else low


def _is_range(v: Any) -> bool:
    return isinstance(v, dict) and {"low", "high"} <= set(v) and set(v) <= RANGE_KEYS


def _special(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("fixed", "choose")


def _range(path: str, spec: dict) -> tuple[bool, Any, Any, Any, bool]:
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), bool(spec.get("log", False))
    nums = [x for x in (low, high, step) if x is not None]
    if any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in nums):
        raise ConfigError(f"search.space.{path}: low, high and step must be numbers")
    if low > high:
        raise ConfigError(f"search.space.{path}: low {low} is above high {high}")
    if step is not None and step <= 0:
        raise ConfigError(f"search.space.{path}: step must be positive")
    if log and (low <= 0 or step is not None):
        raise ConfigError(f"search.space.{path}: log ranges need low > 0 and no step")
    return all(isinstance(x, int) for x in nums), low, high, step, log


def sample(picker: Picker, template: Any, path: str) -> Any:
    """A concrete value of `template`, each searched value asked of `picker` under its path."""
    if isinstance(template, list):
        if not template:
            return []
        if not all(isinstance(c, _SCALARS) for c in template):
            raise ConfigError(f"search.space.{path}: a list of choices holds plain values; write "
                              "{choose: {label: value, ...}} to choose between mappings, or {fixed: [...]}")
        return picker.suggest_categorical(path, list(template))
    if not isinstance(template, dict):
        return template
    if _special(template) and "fixed" in template:
        return template["fixed"]
    if _special(template):
        options = template["choose"]
        if not isinstance(options, dict) or not options or not all(isinstance(k, str) for k in options):
            raise ConfigError(f"search.space.{path}.choose: expected a mapping of named values (names in quotes "
                              "if YAML would read them as true/false)")
        label = picker.suggest_categorical(path, list(options))
        return sample(picker, options[label], f"{path}.{label}")
    if _is_range(template):
        is_int, low, high, step, log = _range(path, template)
        if is_int:
            return picker.suggest_int(path, low, high, step=step or 1, log=log)
        return round(float(picker.suggest_float(path, float(low), float(high), step=step, log=log)), 10)
    return {k: sample(picker, v, f"{path}.{k}") for k, v in template.items()}


def sample_chain(picker: Picker, space: dict) -> list[dict]:
    """One option per step, in the space's order: the stages of a trial (named after their step)."""
    stages = []
    for step, options in space.items():
        label = picker.suggest_categorical(step, list(options))
        template = options[label]
        if template:
            stages.append({**sample(picker, template, f"{step}.{label}"), "name": step})
    return stages


def merge_space(base: dict, over: dict) -> dict:
    """`over` on top of `base`: mappings merged key by key, null removes, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict) and not _special(v) and not _special(out[k]):
            out[k] = merge_space(out[k], v)
        else:
            out[k] = v
    return out


def check_space(space: dict) -> None:
    """Every step, option and template is well formed, and every option's stage validates at both
    corners of its ranges: bad input is one line before any trial runs."""
    from frugalml.config import _safe_name
    from frugalml.recipe import recipe_from_mapping

    if not isinstance(space, dict) or not space:
        raise ConfigError("search.space: no steps to search (give at least one step with its options)")
    for step, options in space.items():
        try:
            _safe_name(str(step))
        except ValueError as e:
            raise ConfigError(f"search.space.{step}: a step name becomes a stage name: {e}") from None
        if not isinstance(options, dict) or not options:
            raise ConfigError(f"search.space.{step}: expected its options: a mapping of label -> stage template")
        for label, template in options.items():
            where = f"search.space.{step}.{label}"
            if not isinstance(label, str):
                raise ConfigError(f"{where}: option labels are names (quote it if YAML reads it as true/false)")
            if not template:
                continue
            if not isinstance(template, dict) or "kind" not in template:
                raise ConfigError(f"{where}: expected a stage template with a `kind` (or {{}} for no stage)")
            if {"name", "parent"} & set(template):
                raise ConfigError(f"{where}: `name` and `parent` are set by the search (stages are named after "
                                  "their step and start from the previous one)")
            for high in (False, True):
                stage = sample(Corner(high, {step: label}), template, f"{step}.{label}")
                raw = {"stages": [{"kind": "train", "name": "base"}, {**stage, "name": step}]}
                try:
                    recipe_from_mapping(raw, where)
                except ConfigError as e:
                    first = str(e).splitlines()[0]  # one line, even when several keys are wrong
                    raise ConfigError(first.replace(f"{where}: stages.1.", f"{where}.", 1)) from None


def parameters(space: dict) -> dict[str, Any]:
    """Every searched parameter by name: a list of choices or a range mapping."""
    out: dict[str, Any] = {}

    def walk(t: Any, path: str) -> None:
        if isinstance(t, list) and t and all(isinstance(c, _SCALARS) for c in t):
            out[path] = list(t)
        elif _special(t) and "choose" in t:
            out[path] = list(t["choose"])
            for label, v in t["choose"].items():
                walk(v, f"{path}.{label}")
        elif _is_range(t):
            out[path] = dict(t)
        elif isinstance(t, dict) and not _special(t):
            for k, v in t.items():
                walk(v, f"{path}.{k}")

    for step, options in space.items():
        out[step] = list(options)
        for label, template in options.items():
            walk(template or {}, f"{step}.{label}")
    return out


def admits(spec: Any, value: Any) -> bool:
    """Whether `value` is one of a parameter's choices or lies in its range (on its step grid)."""
    if isinstance(spec, list):
        return value in spec
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    low, high, step = spec["low"], spec["high"], spec.get("step")
    on_grid = step is None or abs((value - low) / step - round((value - low) / step)) < 1e-6
    return low <= value <= high and on_grid


def initial_params(space: dict, wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parameter sets to try first. A set whose step choices the space lacks is left out; a value
    outside the space is left to the sampler. Steps a set leaves open are `none` where that is an
    option (so `{quantize: int8}` means int8 of the base model alone)."""
    params = parameters(space)
    out = []
    for want in wanted:
        if not all(k in space and admits(params[k], v) for k, v in want.items() if "." not in k):
            continue
        full = {step: "none" for step, options in space.items() if "none" in options and step not in want}
        full.update({k: v for k, v in want.items() if k in params and admits(params[k], v)})
        if full not in out:
            out.append(full)
    return out
