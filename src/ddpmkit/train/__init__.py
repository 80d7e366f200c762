"""Training: config, loop, EMA, checkpoints (safetensors + JSON), loading for sampling."""

from .checkpoint import list_checkpoints, newest_valid_checkpoint, verify_checkpoint
from .compile import maybe_compile
from .config import TrainConfig
from .ema import EMA
from .load import Loaded, load_denoiser
from .trainer import Dist, Run, TrainingDiverged, TrainResult, read_run, train

__all__ = ["EMA", "Dist", "Loaded", "Run", "TrainConfig", "TrainResult", "TrainingDiverged",
           "list_checkpoints", "load_denoiser", "maybe_compile", "newest_valid_checkpoint",
           "read_run", "train", "verify_checkpoint"]
