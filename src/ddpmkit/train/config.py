"""Training configuration: one frozen dataclass, saved as the run's config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from ..diffusion import PARAMETERIZATIONS
from ..errors import InputError
from ..losses import WEIGHTINGS
from ..schedules import SCHEDULE_NAMES

LRSchedule = Literal["constant", "cosine"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (and, with the seed, its exact weights).

    Budget: ``steps`` (a fixed number of optimizer steps) or ``minutes`` (wall clock, counted
    across resumes; the learning-rate schedule is then constant after warm-up). ``batch_size``
    is the global batch (split across processes under torchrun). The loss is
    ``weighting`` applied to the x0-MSE (see ddpmkit.losses), divided by the mean weight so that
    its scale is near 1 whatever the weighting.
    """

    data: str = "digits"
    image_size: int | None = None
    preset: str | None = None  # net preset; None picks one from the data (digits, mnist, mlp2d)
    net_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    schedule: str = "cosine"
    T: int = 1000
    parameterization: str = "x0"
    weighting: str = "min_snr"
    gamma: float = 5.0
    timesteps: str = "uniform"
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: LRSchedule = "constant"
    warmup_steps: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    steps: int | None = None
    minutes: float | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    sample_every: int = 1000
    log_every: int = 50
    bf16: bool = False
    compile: bool = False
    seed: int = 0
    nonfinite: Literal["stop", "skip"] = "stop"

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise InputError("give exactly one budget: steps or minutes")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise InputError(f"steps must be a whole number >= 1; got {self.steps!r}")
        if self.minutes is not None and not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise InputError(f"minutes must be > 0; got {self.minutes!r}")
        if self.schedule not in SCHEDULE_NAMES:
            raise InputError(f"unknown schedule {self.schedule!r}; choose one of "
                             f"{', '.join(SCHEDULE_NAMES)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise InputError(f"unknown parameterization {self.parameterization!r}; choose one of "
                             f"{', '.join(PARAMETERIZATIONS)}")
        if self.weighting not in WEIGHTINGS:
            raise InputError(f"unknown loss {self.weighting!r}; choose one of "
                             f"{', '.join(WEIGHTINGS)}")
        if self.timesteps not in ("uniform", "importance"):
            raise InputError(f"unknown timestep sampling {self.timesteps!r}; "
                             "choose 'uniform' or 'importance'")
        if self.lr_schedule not in ("constant", "cosine"):
            raise InputError(f"unknown lr schedule {self.lr_schedule!r}; choose constant or cosine")
        if self.lr_schedule == "cosine" and self.steps is None:
            raise InputError("the cosine lr schedule needs a step budget (--steps), not minutes")
        if self.nonfinite not in ("stop", "skip"):
            raise InputError(f"nonfinite must be 'stop' or 'skip'; got {self.nonfinite!r}")
        for name in ("T", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"{name} must be a whole number >= 1; got {v!r}")
        for name in ("warmup_steps", "sample_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise InputError(f"{name} must be a whole number >= 0; got {v!r}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0; got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"ema_decay must lie in [0, 1); got {self.ema_decay}")
        if not self.grad_clip >= 0:
            raise InputError(f"grad_clip must be >= 0 (0 = off); got {self.grad_clip}")
        if not self.gamma > 0:
            raise InputError(f"gamma must be > 0; got {self.gamma}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown training option(s) {', '.join(unknown)} in config.json")
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


def default_preset(kind: str, shape: tuple[int, ...]) -> str:
    """The net preset for data of this kind and shape."""
    if kind == "vector":
        return "mlp2d"
    _, h, w = shape
    if max(h, w) <= 12:
        return "digits"
    if max(h, w) <= 28:
        return "mnist"
    return "cifar10"
