"""Noise schedules: float64 tables indexed by the paper's t = 0..T.

Notation (Ho et al. 2020): beta_t, alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s,
snr_t = alpha_bar_t / (1 - alpha_bar_t). Every table has length T + 1 and is indexed by t, with
``beta[0] = 0`` and ``alpha_bar[0] = 1``; there is no "code t = paper t - 1" anywhere.

A respaced schedule (``respace``) is a shorter Markov chain over kept steps
tau_1 < ... < tau_S of the original chain. Its own index runs k = 0..S, and
``timesteps[k] = tau_k`` maps it back to the original t, which is what a network trained on the
full chain must be given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .errors import InputError

ScheduleName = Literal["linear", "cosine", "sigmoid", "logsnr_linear"]
#: named shapes; each can be given log-SNR end points (``make_schedule(..., logsnr_max=...)``).
#: ``logsnr_linear`` only exists with end points; the other three also have their native form.
SCHEDULE_NAMES: tuple[str, ...] = ("linear", "cosine", "sigmoid", "logsnr_linear")

#: Nichol & Dhariwal (2021) cap beta_t at 0.999 so that the last steps of the cosine schedule
#: do not reach beta = 1 (which would make alpha_bar_T = 0 and snr_T = 0 exactly).
COSINE_BETA_MAX = 0.999


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """A discrete forward process q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I).

    Attributes:
        beta: (T+1,) float64, ``beta[0] = 0`` and beta_t in (0, 1) for t = 1..T.
        timesteps: (T+1,) int64, the original-chain t of each index (identity unless respaced;
            ``timesteps[0] = 0``).
        name: a human label, e.g. ``"linear"`` or ``"cosine/respaced(50)"``.
    """

    beta: torch.Tensor
    timesteps: torch.Tensor
    name: str = "custom"
    #: alpha_bar_t and 1 - alpha_bar_t, (T+1,) float64. Computed from beta when not given; a
    #: respaced chain passes the original chain's values at the kept steps so that they stay
    #: exact (re-deriving them as products of 1 - beta' loses digits where beta' is near 1).
    alpha_bar: torch.Tensor = None  # type: ignore[assignment]
    one_minus_alpha_bar: torch.Tensor = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        beta = self.beta
        if beta.dtype != torch.float64 or beta.dim() != 1:
            raise InputError("schedule betas must be a 1-D float64 tensor of length T+1")
        if beta.numel() < 2:
            raise InputError("a schedule needs T >= 1 steps; got T = 0")
        if beta[0].item() != 0.0:
            raise InputError("beta[0] must be 0 (tables are indexed by t = 0..T)")
        b = beta[1:]
        if not torch.isfinite(b).all() or (b <= 0).any() or (b >= 1).any():
            bad = int(torch.nonzero(~((b > 0) & (b < 1))).flatten()[0]) + 1
            raise InputError(
                f"beta_t must lie in (0, 1) for every t = 1..T; beta_{bad} = {beta[bad].item()!r}"
                " (cap beta or choose a larger T)"
            )
        if self.timesteps.shape != beta.shape or self.timesteps.dtype != torch.int64:
            raise InputError("timesteps must be an int64 tensor with the same length as beta")
        ts = self.timesteps
        if ts[0].item() != 0 or (ts[1:] <= ts[:-1]).any():
            raise InputError("timesteps must start at 0 and increase strictly")
        if self.alpha_bar is None:
            object.__setattr__(self, "alpha_bar", torch.cumprod(1.0 - beta, dim=0))
        if self.one_minus_alpha_bar is None:
            # -expm1(sum log alpha_s) keeps the digits of 1 - alpha_bar near t = 1; + 0.0 turns
            # -0.0 at t = 0 into +0.0 so that snr[0] = +inf, not -inf
            omab = -torch.expm1(torch.cumsum(torch.log1p(-beta), dim=0)) + 0.0
            object.__setattr__(self, "one_minus_alpha_bar", omab)
        for tab in (self.alpha_bar, self.one_minus_alpha_bar):
            if tab.dtype != torch.float64 or tab.shape != beta.shape:
                raise InputError("alpha_bar tables must be float64 with the same length as beta")

    # ---- derived tables (float64, length T+1) -------------------------------------------
    @property
    def T(self) -> int:
        """Number of diffusion steps."""
        return self.beta.numel() - 1

    @property
    def alpha(self) -> torch.Tensor:
        """alpha_t = 1 - beta_t; alpha[0] = 1."""
        return 1.0 - self.beta

    @property
    def snr(self) -> torch.Tensor:
        """snr_t = alpha_bar_t / (1 - alpha_bar_t); snr[0] = +inf."""
        return self.alpha_bar / self.one_minus_alpha_bar

    @property
    def log_snr(self) -> torch.Tensor:
        """log snr_t; log_snr[0] = +inf."""
        return torch.log(self.alpha_bar) - torch.log(self.one_minus_alpha_bar)

    @property
    def is_respaced(self) -> bool:
        return not bool(torch.equal(self.timesteps, torch.arange(self.T + 1)))

    def respace(self, steps: int | Sequence[int]) -> NoiseSchedule:
        """The sub-chain over kept steps; see :func:`respace`."""
        return respace(self, steps)

    def __repr__(self) -> str:
        return f"NoiseSchedule(name={self.name!r}, T={self.T})"


def _check_T(T: int) -> int:
    if isinstance(T, bool) or not isinstance(T, int):
        raise InputError(f"T must be an integer >= 1; got {T!r}")
    if T < 1:
        raise InputError(f"T must be >= 1; got T = {T}")
    return T


def from_betas(betas: Sequence[float] | torch.Tensor, name: str = "custom") -> NoiseSchedule:
    """Schedule from beta_1..beta_T (length T); beta[0] = 0 is prepended.

    Raises InputError for beta_t outside (0, 1), which is the same as a non-decreasing
    1 - alpha_bar or a non-monotone alpha_bar.
    """
    b = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if b.numel() < 1:
        raise InputError("from_betas needs at least one beta (T >= 1)")
    beta = torch.cat([torch.zeros(1, dtype=torch.float64), b])
    return NoiseSchedule(beta=beta, timesteps=torch.arange(beta.numel()), name=name)


def from_alpha_bar(alpha_bar: Sequence[float] | torch.Tensor, name: str = "custom",
                   beta_max: float | None = None) -> NoiseSchedule:
    """Schedule from alpha_bar_0..alpha_bar_T (length T+1, alpha_bar_0 = 1).

    beta_t = 1 - alpha_bar_t / alpha_bar_{t-1}, optionally capped at ``beta_max``.
    Raises InputError if alpha_bar is not strictly decreasing from 1.
    """
    ab = torch.as_tensor(alpha_bar, dtype=torch.float64).flatten()
    if ab.numel() < 2:
        raise InputError("alpha_bar needs length T+1 >= 2")
    if ab[0].item() != 1.0:
        raise InputError(f"alpha_bar[0] must be 1; got {ab[0].item()!r}")
    if (ab[1:] >= ab[:-1]).any() or (ab[1:] < 0).any():
        raise InputError("alpha_bar must decrease strictly from 1 and stay >= 0")
    beta = 1.0 - ab[1:] / ab[:-1]
    if beta_max is not None:
        beta = beta.clamp(max=beta_max)
    return from_betas(beta, name=name)


def linear(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
           beta_max: float | None = None) -> NoiseSchedule:
    """Ho et al.'s linear betas: beta_t evenly spaced from beta_start to beta_end, t = 1..T.

    For T != 1000 both ends are rescaled by 1000/T, as improved-diffusion does, so that the chain
    keeps the same total noise. Where that makes beta_T >= 1 (T < 21 with Ho's ends) an
    InputError asks for a cap; with ``beta_max`` the betas are clamped to it.
    """
    _check_T(T)
    scale = 1000.0 / T
    start, end = scale * beta_start, scale * beta_end
    beta = torch.linspace(start, end, T, dtype=torch.float64)
    if T == 1:
        beta = torch.tensor([start], dtype=torch.float64)
    if beta_max is not None:
        if not 0.0 < beta_max < 1.0:
            raise InputError(f"beta_max must lie in (0, 1); got {beta_max}")
        beta = beta.clamp(max=beta_max)
    elif (beta >= 1).any():
        raise InputError(
            f"linear schedule with T = {T}: rescaled beta_T = {end:.4g} >= 1; "
            "pass beta_max (e.g. 0.999) or use T >= 21"
        )
    return from_betas(beta, name="linear")


def cosine(T: int = 1000, s: float = 0.008, beta_max: float = COSINE_BETA_MAX) -> NoiseSchedule:
    """Nichol & Dhariwal's cosine schedule.

    alpha_bar_t = f(t) / f(0) with f(t) = cos(((t/T + s) / (1 + s)) * pi/2)^2, and
    beta_t = min(1 - alpha_bar_t / alpha_bar_{t-1}, beta_max) with beta_max = 0.999 by default:
    without the cap beta_T = 1 and alpha_bar_T = 0.
    """
    _check_T(T)
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    beta = (1.0 - ab[1:] / ab[:-1]).clamp(max=beta_max)
    return from_betas(beta, name="cosine")


def sigmoid(T: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
            beta_max: float = COSINE_BETA_MAX) -> NoiseSchedule:
    """Sigmoid schedule of Jabri, Fleet & Chen (2023), "On the importance of noise scheduling".

    alpha_bar_t = (sigma(end/tau) - sigma((t/T (end-start) + start)/tau)) /
                  (sigma(end/tau) - sigma(start/tau)), betas capped at ``beta_max`` (0.999).
    """
    _check_T(T)
    t = torch.arange(T + 1, dtype=torch.float64) / T
    v_start = torch.sigmoid(torch.tensor(start / tau, dtype=torch.float64))
    v_end = torch.sigmoid(torch.tensor(end / tau, dtype=torch.float64))
    ab = (v_end - torch.sigmoid((t * (end - start) + start) / tau)) / (v_end - v_start)
    beta = (1.0 - ab[1:] / ab[:-1]).clamp(max=beta_max)
    return from_betas(beta, name="sigmoid")


def make_schedule(name: str, T: int = 1000, *, logsnr_max: float | None = None,
                  logsnr_min: float | None = None, **kwargs) -> NoiseSchedule:
    """Build a named schedule: ``linear``, ``cosine``, ``sigmoid`` or ``logsnr_linear``.

    Without end points the first three are their native definitions (Ho's betas, iDDPM's
    cosine, Jabri et al.'s sigmoid), exactly as runs made before end points existed. With
    ``logsnr_max`` / ``logsnr_min`` the shape's continuous log-SNR curve is truncated to that
    range (:func:`from_logsnr_endpoints`): log snr_1 = logsnr_max and log snr_T = logsnr_min.
    """
    if (logsnr_max is None) != (logsnr_min is None):
        raise InputError("give both log-SNR end points (logsnr_max and logsnr_min) or neither")
    if logsnr_max is not None:
        if kwargs:
            raise InputError(f"options {sorted(kwargs)} do not apply to a schedule set by its "
                             "log-SNR end points")
        return from_logsnr_endpoints(name, T, logsnr_max, logsnr_min)  # type: ignore[arg-type]
    if name == "linear":
        return linear(T, **kwargs)
    if name == "cosine":
        return cosine(T, **kwargs)
    if name == "sigmoid":
        return sigmoid(T, **kwargs)
    if name == "logsnr_linear":
        raise InputError("logsnr_linear needs its end points: logsnr_max and logsnr_min "
                         "(e.g. --logsnr-max 6 --logsnr-min -9)")
    raise InputError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULE_NAMES)}")


# ---- schedules set by log-SNR end points -------------------------------------------------
def from_logsnr(log_snr: Sequence[float] | torch.Tensor, name: str = "custom") -> NoiseSchedule:
    """Schedule from lambda_t = log snr_t for t = 1..T (length T, strictly decreasing).

    alpha_bar_t = sigmoid(lambda_t) and 1 - alpha_bar_t = sigmoid(-lambda_t) are both computed
    directly (no 1 - x cancellation at either end), and
    beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} = -expm1(logsigmoid(lambda_t) -
    logsigmoid(lambda_{t-1})), with lambda_0 = +inf (alpha_bar_0 = 1).
    """
    lam = torch.as_tensor(log_snr, dtype=torch.float64).flatten()
    if lam.numel() < 1 or not torch.isfinite(lam).all():
        raise InputError("log-SNR values must be finite and there must be at least one (T >= 1)")
    if (lam[1:] >= lam[:-1]).any():
        raise InputError("log-SNR must decrease strictly in t (more noise at larger t)")
    log_ab = torch.nn.functional.logsigmoid(lam)
    log_ab_prev = torch.cat([torch.zeros(1, dtype=torch.float64), log_ab[:-1]])
    beta = -torch.expm1(log_ab - log_ab_prev)
    zero, one = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    return NoiseSchedule(beta=torch.cat([zero, beta]), timesteps=torch.arange(lam.numel() + 1),
                         name=name, alpha_bar=torch.cat([one, torch.sigmoid(lam)]),
                         one_minus_alpha_bar=torch.cat([zero, torch.sigmoid(-lam)]))


def _shape_logsnr(name: str, u: torch.Tensor) -> torch.Tensor:
    """The continuous log-SNR curve lambda(u), u in (0, 1), of a named shape (decreasing)."""
    if name == "cosine":  # alpha_bar = cos^2(pi u / 2): lambda = -2 log tan(pi u / 2)
        return -2.0 * torch.log(torch.tan(u * math.pi / 2))
    if name == "linear":  # the continuous limit of Ho's betas (1e-4 .. 0.02 over 1000 steps)
        log_ab = -1000.0 * (1e-4 * u + (0.02 - 1e-4) * u**2 / 2)
        return log_ab - torch.log(-torch.expm1(log_ab))
    if name == "sigmoid":  # Jabri et al.'s default (start -3, end 3, tau 1)
        v_s, v_e = torch.sigmoid(torch.tensor(-3.0)), torch.sigmoid(torch.tensor(3.0))
        ab = ((v_e - torch.sigmoid(u * 6.0 - 3.0)) / (v_e - v_s)).to(torch.float64)
        return torch.log(ab) - torch.log1p(-ab)
    if name == "logsnr_linear":
        return -u  # any decreasing affine map: truncation makes it linear between the ends
    raise InputError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULE_NAMES)}")


def _solve_u(name: str, target: float) -> float:
    """u in (0, 1) with lambda(u) = target, by bisection (lambda decreases in u)."""
    lo, hi = 1e-12, 1.0 - 1e-12
    lam_lo = float(_shape_logsnr(name, torch.tensor([lo], dtype=torch.float64)))
    lam_hi = float(_shape_logsnr(name, torch.tensor([hi], dtype=torch.float64)))
    if not lam_hi <= target <= lam_lo:
        raise InputError(f"log-SNR {target:g} is outside what the {name} shape reaches "
                         f"({lam_hi:.3g} .. {lam_lo:.3g}); choose end points inside it")
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(_shape_logsnr(name, torch.tensor([mid], dtype=torch.float64))) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def from_logsnr_endpoints(shape: ScheduleName, T: int, logsnr_max: float,
                          logsnr_min: float) -> NoiseSchedule:
    """A named shape truncated to log snr_1 = logsnr_max and log snr_T = logsnr_min.

    lambda_t = lambda(u_t) with u_t = u_a + (t - 1)/(T - 1) (u_b - u_a), where the shape's
    continuous curve lambda(u) (cosine: -2 log tan(pi u/2); linear: Ho's betas in continuous
    time; sigmoid; logsnr_linear: a straight line) meets the end points at u_a and u_b. So
    ``logsnr_linear`` is lambda_t = logsnr_max + (t - 1)/(T - 1) (logsnr_min - logsnr_max).
    """
    _check_T(T)
    for v, what in ((logsnr_max, "logsnr_max"), (logsnr_min, "logsnr_min")):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise InputError(f"{what} must be a finite number; got {v!r}")
    if not logsnr_max > logsnr_min:
        raise InputError(f"logsnr_max ({logsnr_max:g}) must be larger than logsnr_min "
                         f"({logsnr_min:g}): log-SNR falls as noise is added")
    frac = (torch.arange(T, dtype=torch.float64) / (T - 1) if T > 1
            else torch.zeros(1, dtype=torch.float64))
    if T == 1:  # one step: x_1 carries the smallest noise, and it is also x_T
        lam = torch.tensor([float(logsnr_max)], dtype=torch.float64)
    elif shape == "logsnr_linear":
        lam = logsnr_max + frac * (logsnr_min - logsnr_max)
    else:
        u_a, u_b = _solve_u(shape, float(logsnr_max)), _solve_u(shape, float(logsnr_min))
        lam = _shape_logsnr(shape, u_a + frac * (u_b - u_a))
        lam[0], lam[-1] = float(logsnr_max), float(logsnr_min)  # exact ends
    return from_logsnr(lam, name=f"{shape}[{logsnr_max:g},{logsnr_min:g}]")


#: sigma_min = bin / LOGSNR_MAX_BIN_FRACTION: the smallest noise, relative to the bin width
#: Delta = 2/(K-1) of data on K levels; log snr_max = 2 ln(LOGSNR_MAX_BIN_FRACTION / Delta).
#: Measured on the digits (docs/likelihood.md): see the table there for other constants.
LOGSNR_MAX_BIN_FRACTION = 6.0
#: log snr_T: alpha_bar_T = sigmoid(-9) = 1.2e-4 makes the prior term KL(q(x_T|x_0) || N(0,I))
#: below 1e-4 bits/dim for any data in [-1, 1] (it is ~alpha_bar_T E[x_0^2] / (2 ln 2)).
LOGSNR_MIN_DEFAULT = -9.0
#: log snr_max for continuous (not discretized) data, where there is no bin to follow.
LOGSNR_MAX_CONTINUOUS = 10.0


def default_logsnr_endpoints(levels: int | None) -> tuple[float, float]:
    """(logsnr_max, logsnr_min) for data on ``levels`` values in [-1, 1] (None: continuous).

    logsnr_max = 2 ln(c / Delta) with Delta = 2/(levels - 1) and c = LOGSNR_MAX_BIN_FRACTION,
    i.e. sigma_min / alpha = Delta / c at t = 1.
    """
    if levels is None:
        return LOGSNR_MAX_CONTINUOUS, LOGSNR_MIN_DEFAULT
    if levels < 2:
        raise InputError(f"levels must be >= 2; got {levels}")
    delta = 2.0 / (levels - 1)
    return round(2.0 * math.log(LOGSNR_MAX_BIN_FRACTION / delta), 4), LOGSNR_MIN_DEFAULT


Spacing = Literal["uniform", "quadratic", "trailing", "logsnr", "logsnr_clipped"]
SPACINGS: tuple[str, ...] = ("uniform", "quadratic", "trailing", "logsnr", "logsnr_clipped")
#: ``logsnr_clipped`` stops its log-SNR-uniform steps here, then jumps to T. Below snr = e^-2
#: (12 % of x_t's variance is signal for unit-scale data) the denoiser barely changes, so steps
#: spent there are wasted; plain ``logsnr`` on the cosine schedule (log snr_T = -20) puts half
#: its steps there.
LOGSNR_CLIP = -2.0


def spaced_timesteps(schedule: NoiseSchedule, steps: int,
                     spacing: Spacing = "uniform") -> list[int]:
    """Choose ``steps`` original-chain timesteps 1 <= tau_1 < ... < tau_S = T.

    ``uniform``: evenly spaced, rounded, always ending at T; ``trailing``: T, T - T/S, ...
    (as in Lin et al. 2024); ``quadratic``: tau_k ~ T (k/S)^2 (denser near t = 1, as DDIM);
    ``logsnr``: evenly spaced in log snr between log snr_1 and log snr_T; ``logsnr_clipped``:
    tau_1..tau_{S-1} evenly spaced in log snr from log snr_1 down to max(log snr_T,
    LOGSNR_CLIP), then tau_S = T.
    """
    if spacing not in SPACINGS:
        raise InputError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    T = schedule.T
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an integer >= 1; got {steps!r}")
    if steps > T:
        raise InputError(f"steps = {steps} exceeds the schedule's T = {T}; use steps <= {T}")
    if steps == T:
        return list(range(1, T + 1))
    if steps == 1:
        return [T]  # one jump from x_T to x_0
    if spacing == "uniform":
        raw = torch.linspace(1, T, steps, dtype=torch.float64).round().long().tolist()
    elif spacing == "trailing":
        raw = [round(T - i * T / steps) for i in range(steps)][::-1]
    elif spacing == "quadratic":
        raw = (1 + (T - 1) * torch.linspace(0, 1, steps, dtype=torch.float64) ** 2).round()
        raw = raw.long().tolist()
    elif spacing == "logsnr":
        raw = _nearest_logsnr(schedule, float(schedule.log_snr[T]), steps)
    elif spacing == "logsnr_clipped":
        lo = max(float(schedule.log_snr[T]), LOGSNR_CLIP)
        raw = sorted([*_nearest_logsnr(schedule, lo, steps - 1), T])
    else:
        raise InputError(f"unknown spacing {spacing!r}; choose one of {', '.join(SPACINGS)}")
    return _dedupe_increasing(raw, T)


def _nearest_logsnr(schedule: NoiseSchedule, lo: float, n: int) -> list[int]:
    """The t in 1..T nearest to n log snr values evenly spaced from log snr_1 down to ``lo``."""
    ls = schedule.log_snr[1:]  # decreasing in t
    targets = torch.linspace(float(ls[0]), lo, n, dtype=torch.float64)
    return [int(torch.argmin((ls - v).abs())) + 1 for v in targets.tolist()]


def _dedupe_increasing(raw: list[int], T: int) -> list[int]:
    """Make a rounded list strictly increasing within [1, T] while keeping its length."""
    n = len(raw)
    out: list[int] = []
    for i, v in enumerate(raw):
        lo = out[-1] + 1 if out else 1
        hi = T - (n - 1 - i)  # leave room for the rest
        out.append(min(max(int(v), lo), hi))
    return out


def respace(schedule: NoiseSchedule, steps: int | Sequence[int],
            spacing: Spacing = "uniform") -> NoiseSchedule:
    """Sub-chain over kept steps tau_1 < ... < tau_S (an int picks them with ``spacing``).

    Its betas are re-derived from alpha_bar between kept steps,
    beta'_k = 1 - alpha_bar_{tau_k} / alpha_bar_{tau_{k-1}} (tau_0 = 0), so alpha_bar'_k equals
    the original alpha_bar_{tau_k} and q(x_{tau_k} | x_0) is unchanged. Respacing to all T
    steps returns the same tables (the identity).
    """
    if isinstance(steps, int) and not isinstance(steps, bool):
        kept = spaced_timesteps(schedule, steps, spacing)
    else:
        kept = [int(s) for s in steps]
        if not kept or kept != sorted(set(kept)) or kept[0] < 1 or kept[-1] > schedule.T:
            raise InputError(
                f"kept timesteps must increase strictly within 1..{schedule.T}; got {kept[:8]}..."
            )
    if len(kept) == schedule.T:
        return schedule  # the identity (tables are immutable by convention)
    idx = torch.tensor([0, *kept], dtype=torch.int64)
    ab = schedule.alpha_bar[idx]
    beta = 1.0 - ab[1:] / ab[:-1]
    full = torch.cat([torch.zeros(1, dtype=torch.float64), beta])
    return NoiseSchedule(beta=full, timesteps=schedule.timesteps[idx].clone(),
                         name=f"{schedule.name}/respaced({len(kept)})", alpha_bar=ab.clone(),
                         one_minus_alpha_bar=schedule.one_minus_alpha_bar[idx].clone())
