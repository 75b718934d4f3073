"""Model zoo: one file per family, each variant a registered factory.

`build_model("cnn", (1, 28, 28), 10, width=16)` builds a zoo model; a name with a colon,
`"my_pkg.nets:tiny"`, imports a user factory with the same signature
`f(input_shape, num_classes, *, activation="relu", **options) -> nn.Module`.
"""

# importing the family modules registers their variants
from frugalml.models import cnn, efficientnet, lenet, mlp, mobilenet, resnet, rnn, shufflenet, transformer  # noqa: F401
from frugalml.models._activations import ACTIVATIONS, activation_names, make_activation
from frugalml.models._config import ModelConfig
from frugalml.models._pruning import pruning_hints, sync_after_pruning
from frugalml.models._registry import MODELS, build_model, list_models, model_spec, register_model

__all__ = [
    "ACTIVATIONS",
    "MODELS",
    "ModelConfig",
    "activation_names",
    "build_model",
    "list_models",
    "make_activation",
    "model_spec",
    "pruning_hints",
    "register_model",
    "sync_after_pruning",
]
