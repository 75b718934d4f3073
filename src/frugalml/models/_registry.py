"""The model registry and `build_model`, which also resolves `package.module:factory` names."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch.nn as nn

from frugalml.errors import ConfigError
from frugalml.registry import Registry

Factory = Callable[..., nn.Module]

MODELS: Registry[Factory] = Registry("model")


def register_model(name: str) -> Callable[[Factory], Factory]:
    """Decorator: `@register_model("cnn")` on `f(input_shape, num_classes, *, activation, **opts)`."""
    return MODELS.register(name)  # type: ignore[return-value]


def list_models() -> list[str]:
    return MODELS.names()


def factory_options(factory: Factory) -> tuple[dict[str, Any], bool]:
    """Keyword options a factory accepts (name -> default) and whether it takes **kwargs."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):  # builtins / C callables: cannot inspect, accept anything
        return {}, True
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    options = {
        p.name: p.default
        for p in params
        if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p not in positional[:2])
    }
    return options, var_kw


def _import_factory(name: str) -> Factory:
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model {name!r}: an import path must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"model {name!r}: cannot import module {module_name!r} ({str(e).splitlines()[0]})"
        ) from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ConfigError(f"model {name!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise ConfigError(f"model {name!r}: {attr!r} is not callable")
    return factory


def _check_input(name: str, input_shape: Any, num_classes: Any) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ConfigError(f"model {name!r}: input_shape must be (C, H, W) positive ints, got {input_shape!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ConfigError(f"model {name!r}: num_classes must be a positive int, got {num_classes!r}")
    return shape  # type: ignore[return-value]


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a zoo model by name, call a user factory given as 'package.module:factory', or load a
    Hugging Face model given as 'hf:DIR' / 'hf:package' (offline; see frugalml.hf)."""
    if name.startswith("hf:"):
        from frugalml import hf

        return hf.build(name, input_shape, num_classes, **kwargs)
    shape = _check_input(name, input_shape, num_classes)
    user = ":" in name
    factory = _import_factory(name) if user else MODELS.get(name)
    options, var_kw = factory_options(factory)
    if user and "activation" not in options and not var_kw and kwargs.get("activation", "relu") == "relu":
        # a user factory without an `activation` option is fine as long as nobody asked for one
        kwargs = {k: v for k, v in kwargs.items() if k != "activation"}
    unknown = sorted(set(kwargs) - set(options)) if not var_kw else []
    if unknown:
        allowed = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "none"
        raise ConfigError(f"model {name!r}: unknown option(s) {', '.join(unknown)}; allowed: {allowed}")
    try:
        model = factory(shape, num_classes, **kwargs)
    except TypeError as e:  # wrong value types or a signature inspect could not see
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"model {name!r}: bad options {kwargs!r} ({first_line})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"model {name!r}: factory returned {type(model).__name__}, expected torch.nn.Module"
        )
    # how to rebuild it: frugalml.save(model, dir) needs nothing else
    model.frugal_spec = model_spec(name, shape, num_classes, **kwargs)
    return model


def model_spec(name: str, input_shape: Any, num_classes: int, **kwargs: Any) -> dict:
    """The ModelSpec dict artifacts store: what `build_model` needs to rebuild a model."""
    if name.startswith("hf:"):
        from frugalml import hf

        return hf.spec(name, input_shape, num_classes, **kwargs)
    return {"name": name, "kwargs": dict(kwargs), "input_shape": [int(s) for s in input_shape],
            "num_classes": int(num_classes)}
