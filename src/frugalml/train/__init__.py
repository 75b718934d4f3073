"""The one training loop and batched evaluation. See trainer.py for the extension points."""

from frugalml.train.callbacks import KeepZeros, require_labels
from frugalml.train.config import DistributedConfig, TrainConfig, TrainOverrides, merge_train
from frugalml.train.evaluate import evaluate, predict_logits
from frugalml.train.trainer import Trainer, TrainResult

__all__ = ["DistributedConfig", "KeepZeros", "TrainConfig", "TrainOverrides", "TrainResult", "Trainer", "evaluate",
           "merge_train", "predict_logits", "require_labels"]
