"""Training: `train()` and the Trainer's loop (trainer.py), set up by plan.py, setup.py and data.py,
with its engines (step.py), batches (batches.py), state (state.py), what it saves (saving.py), hooks,
distributed helpers and TensorBoard logging."""
from .batches import stream_keep_mask
from .schedule import learning_rate
from .state import TrainingInterrupted, TrainResult
from .trainer import train

__all__ = ["TrainResult", "TrainingInterrupted", "learning_rate", "stream_keep_mask", "train"]
