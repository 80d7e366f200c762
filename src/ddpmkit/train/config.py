"""Training configuration: one frozen dataclass, saved as the run's config.json."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from ..diffusion import EDM_SIGMA_DATA, PARAMETERIZATIONS
from ..errors import InputError
from ..losses import TIMESTEP_SAMPLINGS, WEIGHTINGS
from ..schedules import SCHEDULE_NAMES, NoiseSchedule, default_logsnr_endpoints, make_schedule

LRSchedule = Literal["constant", "cosine"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (and, with the seed, its exact weights).

    Budget: ``steps`` (a fixed number of optimizer steps) or ``minutes`` (wall clock, counted
    across resumes; the learning-rate schedule is then constant after warm-up). ``batch_size``
    is the global batch (split across processes under torchrun). The loss is
    ``weighting`` applied to the x0-MSE (see ddpmkit.losses), divided by the mean weight so that
    its scale is near 1 whatever the weighting.

    Schedule: ``schedule`` names the shape; ``logsnr_max`` / ``logsnr_min`` its end points
    log snr_1 and log snr_T. ``"auto"`` (the default) follows the data when the run is made
    (``resolve``): log snr_max from the bin width of data on K levels, log snr_min so that the
    prior term is negligible (:func:`ddpmkit.schedules.default_logsnr_endpoints`). ``None``
    for both is the shape's native definition (how runs made before end points existed load).
    ``sigma_data``: the data's standard deviation for the ``edm`` output, ``"auto"`` = measured
    on the training split. ``t_stratified``: stratified t within each batch (see
    :class:`ddpmkit.losses.TimestepSampler`); ``t_uniform_mix``: the share of uniform t mixed
    into the ``weight``/``logsnr`` proposal. ``fourier_features``: the U-Net's fine-scale input
    features (``UNetConfig.fourier_frequencies``): ``"auto"`` = frequencies 1/Delta and 2/Delta
    for image data on K levels (bin width Delta = 2/(K-1)), none otherwise; ``"none"``; or a
    comma-separated list of frequencies such as ``"8,16"``. ``conditional``: a class-conditional
    denoiser x0_hat(x_t, t, y) trained on the data's labels, each label replaced by the null class
    with probability ``cond_drop`` (so the same net is also unconditional: classifier-free
    guidance). Off by default; a run without it is the run of before, weight for weight.
    """

    data: str = "digits"
    image_size: int | None = None
    preset: str | None = None  # net preset; None picks one from the data (digits, mnist, mlp2d)
    net_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    schedule: str = "logsnr_linear"
    logsnr_max: float | str | None = "auto"
    logsnr_min: float | str | None = "auto"
    T: int = 1000
    parameterization: str = "v"
    sigma_data: float | str | None = "auto"
    weighting: str = "elbo"
    gamma: float = 5.0
    timesteps: str = "weight"
    t_stratified: bool = True
    t_uniform_mix: float = 0.0
    t_decoder_share: float | None = None
    fourier_features: str = "auto"
    conditional: bool = False
    cond_drop: float = 0.1
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
        self._check_names()
        self._check_chain()
        self._check_proposal()
        self._check_numbers()

    def _check_names(self) -> None:
        """The budget and every named choice."""
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
        if self.timesteps not in TIMESTEP_SAMPLINGS:
            raise InputError(f"unknown timestep sampling {self.timesteps!r}; "
                             f"choose one of {', '.join(TIMESTEP_SAMPLINGS)}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise InputError(f"unknown lr schedule {self.lr_schedule!r}; choose constant or cosine")
        if self.lr_schedule == "cosine" and self.steps is None:
            raise InputError("the cosine lr schedule needs a step budget (--steps), not minutes")
        if self.nonfinite not in ("stop", "skip"):
            raise InputError(f"nonfinite must be 'stop' or 'skip'; got {self.nonfinite!r}")

    def _check_chain(self) -> None:
        """The log-SNR end points, sigma_data and the input features."""
        ends = (self.logsnr_max, self.logsnr_min)
        for v, flag in zip(ends, ("--logsnr-max", "--logsnr-min")):
            if not (v is None or v == "auto" or (isinstance(v, (int, float))
                                                  and not isinstance(v, bool)
                                                  and math.isfinite(v))):
                raise InputError(f"{flag} must be a number, 'auto' or 'native'; got {v!r}")
        if (ends[0] is None) != (ends[1] is None):
            raise InputError("give both log-SNR end points or neither ('native' for both)")
        if self.schedule == "logsnr_linear" and ends[0] is None:
            raise InputError("the logsnr_linear schedule needs log-SNR end points; "
                             "drop --logsnr-max/--logsnr-min native or choose another shape")
        if all(isinstance(v, (int, float)) for v in ends) and not ends[0] > ends[1]:
            raise InputError(f"--logsnr-max ({ends[0]}) must be larger than --logsnr-min "
                             f"({ends[1]})")
        sd = self.sigma_data
        if not (sd is None or sd == "auto" or (isinstance(sd, (int, float)) and sd > 0)):
            raise InputError(f"sigma_data must be a number > 0 or 'auto'; got {sd!r}")
        parse_fourier(self.fourier_features)  # raises on a bad value

    def _check_proposal(self) -> None:
        """Conditioning and how t is drawn."""
        if not isinstance(self.conditional, bool):
            raise InputError(f"conditional must be true or false; got {self.conditional!r}")
        if not (isinstance(self.cond_drop, (int, float)) and 0.0 <= self.cond_drop < 1.0):
            raise InputError(f"--cond-drop must lie in [0, 1); got {self.cond_drop!r}")
        if not (isinstance(self.t_uniform_mix, (int, float)) and 0.0 <= self.t_uniform_mix <= 1.0):
            raise InputError(f"--t-uniform-mix must lie in [0, 1]; got {self.t_uniform_mix!r}")
        ds = self.t_decoder_share
        if ds is not None and not (isinstance(ds, (int, float)) and 0.0 < ds < 1.0):
            raise InputError(f"--t-decoder-share must lie in (0, 1); got {ds!r}")
        if not isinstance(self.t_stratified, bool):
            raise InputError(f"t_stratified must be true or false; got {self.t_stratified!r}")

    def _check_numbers(self) -> None:
        """Counts and the optimizer's numbers."""
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
        """From config.json. Fields a run written before they existed lacks take the value that
        reproduces that run (LEGACY_DEFAULTS), not today's default."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InputError(f"unknown training option(s) {', '.join(unknown)} in config.json")
        return cls(**(LEGACY_DEFAULTS | d))

    def resolve(self, levels: int | None, sigma_data: float, image: bool = True) -> TrainConfig:
        """Replace every ``"auto"`` by its value for this data (stored in config.json).

        levels: K of data on K levels (None for continuous data); sigma_data: the training
        data's standard deviation; image: False for vector data (no Fourier features there).
        sigma_data is kept only for the ``edm`` output."""
        lo_hi = default_logsnr_endpoints(levels)
        ch: dict[str, Any] = {}
        if self.logsnr_max == "auto":
            ch["logsnr_max"] = lo_hi[0]
        if self.logsnr_min == "auto":
            ch["logsnr_min"] = lo_hi[1]
        if self.fourier_features == "auto":
            ch["fourier_features"] = ("none" if levels is None or not image else
                                      f"{(levels - 1) / 2:g},{levels - 1:g}")
        if self.parameterization != "edm":
            ch["sigma_data"] = None
        elif self.sigma_data == "auto":
            ch["sigma_data"] = round(float(sigma_data), 6)
        return self.replace(**ch) if ch else self

    def noise_schedule(self) -> NoiseSchedule:
        """The training chain: the named shape with its (resolved) end points."""
        if "auto" in (self.logsnr_max, self.logsnr_min):
            raise InputError("the schedule's end points are still 'auto'; resolve the config "
                             "against the data first (TrainConfig.resolve)")
        return make_schedule(self.schedule, self.T, logsnr_max=self.logsnr_max,
                             logsnr_min=self.logsnr_min)

    def denoiser_kwargs(self) -> dict[str, Any]:
        """parameterization and sigma_data, as :class:`ddpmkit.denoiser.Denoiser` takes them."""
        sd = self.sigma_data if isinstance(self.sigma_data, (int, float)) else EDM_SIGMA_DATA
        return {"parameterization": self.parameterization, "sigma_data": float(sd)}

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


#: values of fields added after the first release, for config.json files that lack them: these
#: reproduce the runs written then (native schedules, no edm, unstratified t)
LEGACY_DEFAULTS: dict[str, Any] = {"logsnr_max": None, "logsnr_min": None, "sigma_data": None,
                                   "t_stratified": False, "fourier_features": "none",
                                   "conditional": False, "cond_drop": 0.1, "t_uniform_mix": 0.0,
                                   "t_decoder_share": None}


def parse_fourier(value: str) -> tuple[float, ...]:
    """"none" -> (); "8,16" -> (8.0, 16.0); "auto" -> () (resolved against the data first)."""
    if not isinstance(value, str):
        raise InputError(f"fourier_features must be auto, none or frequencies like 8,16; got "
                         f"{value!r}")
    if value in ("auto", "none"):
        return ()
    try:
        freqs = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise InputError(f"--fourier-features must be auto, none or positive numbers like 8,16; "
                         f"got {value!r}") from None
    if not freqs or any(not (0 < f < float("inf")) for f in freqs):
        raise InputError(f"--fourier-features frequencies must be > 0; got {value!r}")
    return freqs


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
