"""Training: config, run directory, loop, EMA, checkpoints (safetensors + JSON), loading."""

from ..distributed import Dist
from .checkpoint import list_checkpoints, newest_valid_checkpoint, verify_checkpoint
from .compile import maybe_compile
from .config import TrainConfig
from .ema import EMA
from .load import Loaded, load_denoiser
from .run import Run, make_run, read_log, read_run
from .trainer import TrainingDiverged, TrainResult, train

__all__ = ["EMA", "Dist", "Loaded", "Run", "TrainConfig", "TrainResult", "TrainingDiverged",
           "list_checkpoints", "load_denoiser", "make_run", "maybe_compile",
           "newest_valid_checkpoint", "read_log", "read_run", "train", "verify_checkpoint"]
