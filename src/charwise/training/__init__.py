"""Training: the Trainer (loop.py), its hooks, distributed helpers and TensorBoard logging."""
from .trainer import TrainingInterrupted, TrainResult, learning_rate, stream_keep_mask, train

__all__ = ["TrainResult", "TrainingInterrupted", "learning_rate", "stream_keep_mask", "train"]
