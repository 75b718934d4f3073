"""The one training loop and batched evaluation. See trainer.py for the extension points."""

from frugalml.train.config import TrainConfig
from frugalml.train.evaluate import evaluate, predict_logits
from frugalml.train.trainer import Trainer, TrainResult

__all__ = ["TrainConfig", "Trainer", "TrainResult", "evaluate", "predict_logits"]
