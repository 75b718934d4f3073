"""`ModelConfig`: the `model:` section of a recipe, turned into a ModelSpec for artifacts."""

from __future__ import annotations

from typing import Any

from pydantic import field_validator, model_validator

from frugalml.config import NamedConfig
from frugalml.models._activations import activation_names
from frugalml.models._registry import MODELS, factory_options, model_spec


class ModelConfig(NamedConfig):
    name: str = "cnn"  # a zoo name (`frugal ls models`), 'package.module:factory' or 'hf:DIR|package'
    activation: str = "relu"
    kwargs: dict[str, Any] = {}  # family options, e.g. {"width": 16, "depth": 2}

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, v: str) -> str:
        if v not in activation_names():
            raise ValueError(f"unknown activation {v!r}; allowed: {', '.join(activation_names())}")
        return v

    @field_validator("name")
    @classmethod
    def _known_model(cls, v: str) -> str:
        if ":" not in v and v not in MODELS:
            raise ValueError(
                f"unknown model {v!r}; allowed: {', '.join(MODELS.names())}, 'package.module:factory' or "
                "'hf:DIR' / 'hf:package' (a Hugging Face model, offline)"
            )
        return v

    @model_validator(mode="after")
    def _known_options(self) -> ModelConfig:
        if "activation" in self.kwargs:
            raise ValueError("set the activation with model.activation, not inside model.kwargs")
        if self.name.startswith("hf:"):
            unknown = sorted(set(self.kwargs) - {"pooling", "normalize", "config"})
            if unknown:
                raise ValueError(f"model {self.name!r}: unknown option(s) {', '.join(unknown)}; allowed: "
                                 "pooling (mean|cls|max|logits), normalize, config")
        elif ":" not in self.name:  # user factories are checked when imported, at build time
            options, var_kw = factory_options(MODELS.get(self.name))
            unknown = sorted(set(self.kwargs) - set(options))
            if unknown and not var_kw:
                allowed = ", ".join(f"{k}={v!r}" for k, v in options.items() if k != "activation")
                raise ValueError(
                    f"model {self.name!r}: unknown option(s) {', '.join(unknown)}; allowed: {allowed}"
                )
        return self

    def spec(self, input_shape: tuple[int, int, int] | list[int], num_classes: int) -> dict:
        """The ModelSpec: everything `build_model` needs to rebuild this model."""
        return model_spec(self.name, input_shape, num_classes, **{**self.kwargs, "activation": self.activation})
