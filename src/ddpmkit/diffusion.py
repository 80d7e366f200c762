"""Pure DDPM maths: tensors in, tensors out, float64 coefficients cast at use.

Shapes: ``x`` is (B, ...) with any trailing data shape; ``t`` is an int64 tensor (B,) (or a
Python int, broadcast to the batch) of schedule indices in 1..T. Coefficients are looked up in
the schedule's float64 tables and cast to ``x``'s dtype only at the point of use.

Notation (Ho et al. 2020, see docs/theory.md):
  q(x_t | x_0)          = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
  q(x_{t-1} | x_t, x_0) = N(c_xt(t) x_t + c_x0(t) x_0, sigma_q^2(t) I)
  c_xt    = (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t)
  c_x0    = (1 - alpha_t) sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t)
  sigma_q^2 = (1 - alpha_bar_{t-1}) (1 - alpha_t) / (1 - alpha_bar_t)      (0 at t = 1)
  C_t     = c_x0^2 / (2 sigma_q^2) = (snr_{t-1} - snr_t) / 2                (t >= 2)
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch

from .errors import InputError
from .schedules import NoiseSchedule

Variance = Literal["small", "large", "analytic"]
VARIANCES: tuple[str, ...] = ("small", "large", "analytic")
Parameterization = Literal["x0", "eps", "v", "mu", "edm"]
PARAMETERIZATIONS: tuple[str, ...] = ("x0", "eps", "v", "mu", "edm")
#: sigma_data of the ``edm`` preconditioning when none is given (Karras et al.'s default)
EDM_SIGMA_DATA = 0.5


# ---- table look-up -----------------------------------------------------------------------
def as_timesteps(t: int | torch.Tensor, x: torch.Tensor, T: int) -> torch.Tensor:
    """Validate t and return it as an int64 tensor (B,) on x's device; raises on t outside 1..T."""
    if isinstance(t, int) and not isinstance(t, bool):
        t = torch.full((x.shape[0],), t, dtype=torch.int64, device=x.device)
    elif not isinstance(t, torch.Tensor):
        raise InputError(f"t must be an int or an int64 tensor of shape (B,); got {type(t)}")
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise InputError(f"t must hold integer steps 1..T; got dtype {t.dtype}")
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise InputError(f"t must have shape ({x.shape[0]},) to match x; got {tuple(t.shape)}")
    if t.numel() and (int(t.min()) < 1 or int(t.max()) > T):
        raise InputError(f"t must lie in 1..{T}; got range {int(t.min())}..{int(t.max())}")
    return t.to(device=x.device, dtype=torch.int64)


def extract(table: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """table[t] cast to x's dtype/device and shaped (B, 1, ..., 1) to broadcast against x."""
    v = table.to(t.device)[t].to(dtype=x.dtype)
    return v.reshape(t.shape[0], *([1] * (x.dim() - 1)))


def _prev(table: torch.Tensor) -> torch.Tensor:
    """table shifted so that out[t] = table[t-1] (out[0] = table[0])."""
    return torch.cat([table[:1], table[:-1]])


# ---- coefficient tables (float64, length T+1) --------------------------------------------
class PosteriorCoefficients(NamedTuple):
    """The posterior q(x_{t-1} | x_t, x_0) = N(c_xt x_t + c_x0 x_0, sigma_q2 I) as float64
    tables of length T+1 (index 0 unused, nan)."""

    c_xt: torch.Tensor
    c_x0: torch.Tensor
    sigma_q2: torch.Tensor


def posterior_coefficients(schedule: NoiseSchedule) -> PosteriorCoefficients:
    """(c_xt, c_x0, sigma_q2) of every step t = 1..T, float64 (T+1,) each.

    c_xt = (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t),
    c_x0 = beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t),
    sigma_q2 = (1 - alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t).
    At t = 1: alpha_bar_0 = 1, so c_xt = 0, c_x0 = 1 and sigma_q2 = 0 exactly.
    """
    ab, omab = schedule.alpha_bar, schedule.one_minus_alpha_bar
    ab_prev, omab_prev = _prev(ab), _prev(omab)
    alpha, beta = schedule.alpha, schedule.beta
    c_xt = omab_prev * torch.sqrt(alpha) / omab
    c_x0 = beta * torch.sqrt(ab_prev) / omab
    var = omab_prev * beta / omab
    for tab in (c_xt, c_x0, var):
        tab[0] = float("nan")
    return PosteriorCoefficients(c_xt, c_x0, var)


#: the name used before posterior_coefficients (same NamedTuple, indexable as a tuple)
posterior_tables = posterior_coefficients


def C_t(schedule: NoiseSchedule) -> torch.Tensor:
    """C_t = c_x0(t)^2 / (2 sigma_q^2(t)) = (snr_{t-1} - snr_t)/2 for t = 2..T, float64 (T+1,):
    the lecture's weight of ||x0_hat - x_0||^2 in the ELBO. See :func:`consistency_weight`."""
    return consistency_weight(schedule)


def consistency_weight(schedule: NoiseSchedule) -> torch.Tensor:
    """C_t = c_x0(t)^2 / (2 sigma_q^2(t)) = (snr_{t-1} - snr_t)/2, float64 (T+1,).

    Defined for t >= 2; entries 0 and 1 are nan because sigma_q^2(1) = 0: the t = 1 term of the
    ELBO is the decoder, not a KL. Computed from the snr difference written as
    alpha_bar_{t-1} beta_t / (2 (1-alpha_bar_{t-1})(1-alpha_bar_t)), which has no cancellation.
    """
    ab, omab = schedule.alpha_bar, schedule.one_minus_alpha_bar
    C = _prev(ab) * schedule.beta / (2.0 * _prev(omab) * omab)
    C[:2] = float("nan")
    return C


def _check_mmse(schedule: NoiseSchedule, mmse: torch.Tensor | None) -> torch.Tensor:
    if mmse is None:
        raise InputError("the analytic variance needs the denoiser's per-t error mmse_t "
                         "(ddpmkit.likelihood.fit_mmse on training data)")
    mmse = torch.as_tensor(mmse, dtype=torch.float64).cpu()
    if mmse.shape != (schedule.T + 1,):
        raise InputError(f"mmse must have shape (T+1,) = ({schedule.T + 1},); got "
                         f"{tuple(mmse.shape)}")
    if not torch.isfinite(mmse[1:]).all() or (mmse[1:] < 0).any():
        raise InputError("mmse must be finite and >= 0 for t = 1..T")
    return mmse


def model_variance_table(schedule: NoiseSchedule, variance: Variance = "small",
                         mmse: torch.Tensor | None = None) -> torch.Tensor:
    """sigma_t^2 of p_theta(x_{t-1} | x_t) for t >= 2, float64 (T+1,).

    ``small``: sigma_q^2; ``large``: beta_t; ``analytic``: sigma_q^2 + c_x0(t)^2 mmse_t, the
    isotropic variance that minimises E[KL(q || p_theta)] for a denoiser whose per-dimension
    error E||x0_hat - x_0||^2 / D is mmse_t (Bao et al. 2022, Analytic-DPM, in the x0 view):
    the model mean misses mu_q by c_x0 (x0_hat - x_0), so the best variance adds that spread.
    Index 1 holds the sampler's last-step variance: 0 for every choice (Ho et al., Algorithm 2,
    return the mean at t = 1). The likelihood uses its own decoder variance at t = 1.
    """
    if variance == "small":
        var = posterior_coefficients(schedule)[2]
    elif variance == "large":
        var = schedule.beta.clone()
    elif variance == "analytic":
        e = _check_mmse(schedule, mmse)
        _, c_x0, var_q = posterior_coefficients(schedule)
        var = var_q + c_x0**2 * e
    else:
        raise InputError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    var[0] = float("nan")
    var[1] = 0.0
    return var


# ---- forward process and posterior --------------------------------------------------------
def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps; all (B, ...)."""
    t = as_timesteps(t, x0, schedule.T)
    a = extract(torch.sqrt(schedule.alpha_bar), t, x0)
    s = extract(torch.sqrt(schedule.one_minus_alpha_bar), t, x0)
    return a * x0 + s * noise


def posterior_mean(schedule: NoiseSchedule, x_t: torch.Tensor, x0: torch.Tensor,
                   t: torch.Tensor) -> torch.Tensor:
    """mu_q(x_t, x_0) = c_xt(t) x_t + c_x0(t) x_0; (B, ...)."""
    t = as_timesteps(t, x_t, schedule.T)
    c_xt, c_x0, _ = posterior_coefficients(schedule)
    return extract(c_xt, t, x_t) * x_t + extract(c_x0, t, x_t) * x0


def posterior_variance(schedule: NoiseSchedule, t: torch.Tensor,
                       like: torch.Tensor) -> torch.Tensor:
    """sigma_q^2(t) shaped (B, 1, ..., 1) like ``like`` (0 at t = 1)."""
    t = as_timesteps(t, like, schedule.T)
    return extract(posterior_coefficients(schedule)[2], t, like)


# ---- conversions between parameterizations (exact inverses) -------------------------------
def _a_s(schedule: NoiseSchedule, t: torch.Tensor, x: torch.Tensor):
    t = as_timesteps(t, x, schedule.T)
    return (extract(torch.sqrt(schedule.alpha_bar), t, x),
            extract(torch.sqrt(schedule.one_minus_alpha_bar), t, x))


def eps_from_x0(schedule: NoiseSchedule, x_t, x0, t):
    """eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t)."""
    a, s = _a_s(schedule, t, x_t)
    return (x_t - a * x0) / s


def x0_from_eps(schedule: NoiseSchedule, x_t, eps, t):
    """x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (ill-conditioned near T)."""
    a, s = _a_s(schedule, t, x_t)
    return (x_t - s * eps) / a


def v_from_x0(schedule: NoiseSchedule, x_t, x0, t):
    """v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0
         = (sqrt(alpha_bar_t) x_t - x_0) / sqrt(1 - alpha_bar_t)."""
    a, s = _a_s(schedule, t, x_t)
    return (a * x_t - x0) / s


def x0_from_v(schedule: NoiseSchedule, x_t, v, t):
    """x_0 = sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v."""
    a, s = _a_s(schedule, t, x_t)
    return a * x_t - s * v


def mu_from_x0(schedule: NoiseSchedule, x_t, x0, t):
    """mu_theta = c_xt(t) x_t + c_x0(t) x0_hat (the model mean written like mu_q)."""
    return posterior_mean(schedule, x_t, x0, t)


def x0_from_mu(schedule: NoiseSchedule, x_t, mu, t):
    """x0_hat = (mu - c_xt(t) x_t) / c_x0(t); c_x0 > 0 for every t >= 1 (c_x0(1) = 1)."""
    t = as_timesteps(t, x_t, schedule.T)
    c_xt, c_x0, _ = posterior_coefficients(schedule)
    return (mu - extract(c_xt, t, x_t) * x_t) / extract(c_x0, t, x_t)


def edm_coefficients(schedule: NoiseSchedule, t, x: torch.Tensor, sigma_data: float):
    """(c_in, c_skip, c_out) of EDM's preconditioning in the VP chain, each (B, 1, ..., 1).

    Karras et al. (2022) write D(x~; s) = c_skip x~ + c_out F(c_in x~) for x~ = x_0 + s eps.
    With x~ = x_t / sqrt(alpha_bar_t), s = sqrt((1 - alpha_bar_t) / alpha_bar_t) and
    r_t^2 = (1 - alpha_bar_t) + alpha_bar_t sigma_data^2 (the variance of x_t for data of
    variance sigma_data^2) that is
      x0_hat = (sqrt(alpha_bar_t) sigma_data^2 / r_t^2) x_t
               + (sqrt(1 - alpha_bar_t) sigma_data / r_t) F(x_t / r_t, t),
    so here c_in = 1/r_t multiplies x_t and c_skip already includes 1/sqrt(alpha_bar_t).
    The raw error of F is scaled by c_out ~ sqrt(1 - alpha_bar_t) at low noise; sigma_data = 1
    gives c_skip = sqrt(alpha_bar_t), c_out = sqrt(1 - alpha_bar_t): the v-parameterization
    with F = -v.
    """
    if not sigma_data > 0:
        raise InputError(f"sigma_data must be > 0; got {sigma_data}")
    a, s = _a_s(schedule, t, x)
    r = torch.sqrt(s**2 + a**2 * sigma_data**2)
    return 1.0 / r, a * sigma_data**2 / r**2, s * sigma_data / r


def x0_from_prediction(schedule: NoiseSchedule, x_t, pred, t,
                       parameterization: Parameterization, sigma_data: float = EDM_SIGMA_DATA):
    """Turn a network output in any parameterization into x0_hat.

    For ``edm``, ``pred`` is F evaluated at c_in x_t (see :func:`edm_coefficients`)."""
    if parameterization == "x0":
        return pred
    if parameterization == "eps":
        return x0_from_eps(schedule, x_t, pred, t)
    if parameterization == "v":
        return x0_from_v(schedule, x_t, pred, t)
    if parameterization == "mu":
        return x0_from_mu(schedule, x_t, pred, t)
    if parameterization == "edm":
        _, c_skip, c_out = edm_coefficients(schedule, t, x_t, sigma_data)
        return c_skip * x_t + c_out * pred
    raise InputError(
        f"unknown parameterization {parameterization!r}; "
        f"choose one of {', '.join(PARAMETERIZATIONS)}"
    )


def prediction_from_x0(schedule: NoiseSchedule, x_t, x0, t, parameterization: Parameterization,
                       sigma_data: float = EDM_SIGMA_DATA):
    """The training target of a parameterization, given the clean x_0 (inverse of the above)."""
    if parameterization == "x0":
        return x0
    if parameterization == "eps":
        return eps_from_x0(schedule, x_t, x0, t)
    if parameterization == "v":
        return v_from_x0(schedule, x_t, x0, t)
    if parameterization == "mu":
        return mu_from_x0(schedule, x_t, x0, t)
    if parameterization == "edm":
        _, c_skip, c_out = edm_coefficients(schedule, t, x_t, sigma_data)
        return (x0 - c_skip * x_t) / c_out
    raise InputError(
        f"unknown parameterization {parameterization!r}; "
        f"choose one of {', '.join(PARAMETERIZATIONS)}"
    )


def raw_error_scale(schedule: NoiseSchedule, parameterization: Parameterization,
                    sigma_data: float = EDM_SIGMA_DATA) -> torch.Tensor:
    """|d x0_hat / d(raw output)| per t, float64 (T+1,): how a raw error reaches x0_hat.

    x0: 1; eps: sqrt((1 - alpha_bar_t)/alpha_bar_t); v: sqrt(1 - alpha_bar_t); mu: 1/c_x0(t);
    edm: c_out(t). Under the ELBO weight C_t the raw error costs C_t times its square: x0's
    factor 1 is what makes a raw x0 output lose the bound at small t (docs/theory.md).
    """
    ab, omab = schedule.alpha_bar, schedule.one_minus_alpha_bar
    if parameterization == "x0":
        out = torch.ones_like(ab)
    elif parameterization == "eps":
        out = torch.sqrt(omab / ab)
    elif parameterization == "v":
        out = torch.sqrt(omab)
    elif parameterization == "mu":
        out = 1.0 / posterior_coefficients(schedule)[1]
    elif parameterization == "edm":
        out = torch.sqrt(omab) * sigma_data / torch.sqrt(omab + ab * sigma_data**2)
    else:
        raise InputError(f"unknown parameterization {parameterization!r}; "
                         f"choose one of {', '.join(PARAMETERIZATIONS)}")
    out = out.clone()
    out[0] = float("nan")
    return out


# ---- KL terms and decoders (elementwise; sum over data dims yourself) ----------------------
def gaussian_kl(mean1, var1, mean2, var2):
    """KL(N(mean1, var1) || N(mean2, var2)) elementwise, in nats.

    = 1/2 (log(var2/var1) + var1/var2 - 1 + (mean1 - mean2)^2 / var2). var1 may not be 0.
    The variance part is kept apart from the mean part: written as (var1 + d^2)/var2 - 1 it
    would cancel catastrophically when d^2 << var1 (late t), losing ~6 digits in float64.
    """
    var1 = torch.as_tensor(var1, dtype=mean1.dtype, device=mean1.device)
    var2 = torch.as_tensor(var2, dtype=mean1.dtype, device=mean1.device)
    return 0.5 * (torch.log(var2) - torch.log(var1) + var1 / var2 - 1.0
                  + (mean1 - mean2) ** 2 / var2)


def variance_mismatch(schedule: NoiseSchedule, variance: Variance = "small",
                      mmse: torch.Tensor | None = None) -> torch.Tensor:
    """Per-dimension constant of KL(q || p_theta) from sigma_t^2 != sigma_q^2, float64 (T+1,).

    1/2 (log(sigma_t^2 / sigma_q^2) + sigma_q^2 / sigma_t^2 - 1); 0 for "small"; nan at t < 2.
    Written as 1/2 (d - log1p(d)) with d = sigma_q^2 / sigma_t^2 - 1 given in closed form, so
    that it keeps its digits when sigma_t^2 is close to sigma_q^2.
    """
    if variance == "small":
        out = torch.zeros_like(schedule.beta)
    elif variance == "large":
        # r = sigma_q^2 / beta_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), so
        # d = r - 1 = -alpha_bar_{t-1} beta_t / (1 - alpha_bar_t) exactly
        d = -_prev(schedule.alpha_bar) * schedule.beta / schedule.one_minus_alpha_bar
        out = 0.5 * (d - torch.log1p(d))
    elif variance == "analytic":
        # sigma_t^2 = sigma_q^2 + c_x0^2 mmse: d = -c_x0^2 mmse / sigma_t^2
        e = _check_mmse(schedule, mmse)
        _, c_x0, var_q = posterior_coefficients(schedule)
        extra = c_x0**2 * e
        d = -extra / (var_q + extra)
        out = 0.5 * (d - torch.log1p(d))
    else:
        raise InputError(f"unknown variance {variance!r}; choose one of {', '.join(VARIANCES)}")
    out[:2] = float("nan")
    return out


def kl_x0_weight(schedule: NoiseSchedule, variance: Variance = "small",
                 mmse: torch.Tensor | None = None) -> torch.Tensor:
    """c_x0(t)^2 / (2 sigma_t^2): the KL's weight on ||x0_hat - x_0||^2, float64 (T+1,).

    Equals C_t for the "small" variance (sigma_t^2 = sigma_q^2); nan at t < 2.
    """
    if variance == "small":
        return consistency_weight(schedule)
    c_x0 = posterior_coefficients(schedule).c_x0
    w = c_x0**2 / (2.0 * model_variance_table(schedule, variance, mmse))
    w[:2] = float("nan")
    return w


#: the name used before kl_x0_weight
mean_weight = kl_x0_weight


def prior_kl(schedule: NoiseSchedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) elementwise, (B, ...), in nats."""
    ab_T = schedule.alpha_bar[-1].item()
    # 1/2 (ab_T x0^2 + (1 - ab_T) - 1 - log(1 - ab_T)); the constant -ab_T - log(1 - ab_T) is
    # ab_T^2/2 + ab_T^3/3 + ..., which cancels catastrophically when ab_T is tiny (cosine T)
    if ab_T < 1e-4:
        const = ab_T**2 / 2 + ab_T**3 / 3 + ab_T**4 / 4
    else:
        const = -ab_T - math.log1p(-ab_T)
    return 0.5 * (ab_T * x0**2 + const)


def discretized_gaussian_log_likelihood(x0: torch.Tensor, mean: torch.Tensor,
                                        log_scale: torch.Tensor | float,
                                        levels: int) -> torch.Tensor:
    """log P(x0) for data on ``levels`` equally spaced values in [-1, 1], elementwise.

    Each value owns the bin [x - h, x + h] with h = 1/(levels - 1); the edge bins extend to
    -inf and +inf, so the probabilities of all levels sum to 1. Computed in log space with
    ``torch.special.log_ndtr`` (exact normal CDF): log(Phi(b) - Phi(a)) is evaluated on the
    side of the mean where it does not cancel. ``log_scale`` = log standard deviation.
    """
    if levels < 2:
        raise InputError(f"levels must be >= 2; got {levels}")
    h = 1.0 / (levels - 1)
    log_scale = torch.as_tensor(log_scale, dtype=x0.dtype, device=x0.device)
    inv = torch.exp(-log_scale)
    a = (x0 - h - mean) * inv  # standardized lower edge
    b = (x0 + h - mean) * inv  # standardized upper edge
    # Phi(b) - Phi(a) = Phi(-a) - Phi(-b): use the form whose CDF values are small (no cancellation)
    flip = (a + b) > 0
    hi = torch.where(flip, -a, b)
    lo = torch.where(flip, -b, a)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    log_mid = log_hi + _log1mexp(log_lo - log_hi)
    lowest = x0 < -1.0 + h * 0.5
    highest = x0 > 1.0 - h * 0.5
    log_p = torch.where(lowest, torch.special.log_ndtr(b), log_mid)
    return torch.where(highest, torch.special.log_ndtr(-a), log_p)


def levels_log_likelihood(x0: torch.Tensor, x1: torch.Tensor, alpha: float, sigma: float,
                          levels: int) -> torch.Tensor:
    """log P(x0 | x1) for the exact K-level decoder, elementwise (VDM, Kingma et al. 2021).

    P(x0 = v_k | x1) = q(x1 | v_k) / sum_j q(x1 | v_j) over the ``levels`` values
    v_k = -1 + 2k/(K-1), with q(x1 | x0) = N(alpha x0, sigma^2) per dimension: the posterior of
    x0 under a uniform prior on the levels. It needs no network; it is nearly free once
    sigma / alpha is well below the bin width 2/(K-1) and costs bits when it is not.
    """
    if levels < 2:
        raise InputError(f"levels must be >= 2; got {levels}")
    if not (alpha > 0 and sigma > 0):
        raise InputError(f"alpha and sigma must be > 0; got {alpha}, {sigma}")
    v = torch.linspace(-1.0, 1.0, levels, dtype=x1.dtype, device=x1.device)
    flat1 = x1.reshape(-1)
    out = torch.empty_like(flat1)
    step = max(1, (1 << 22) // levels)  # at most ~4M (element, level) pairs at a time
    for i in range(0, flat1.numel(), step):
        z = flat1[i:i + step, None]
        out[i:i + step] = -torch.logsumexp(-(z - alpha * v) ** 2 / (2 * sigma**2), dim=1)
    return (-(x1 - alpha * x0) ** 2 / (2 * sigma**2) + out.reshape(x1.shape))


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(d)) for d <= 0, stable on both sides of -ln 2 (Maechler 2012)."""
    d = d.clamp(max=-1e-300 if d.dtype == torch.float64 else -1e-38)
    return torch.where(d > -math.log(2.0), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def gaussian_log_likelihood(x0: torch.Tensor, mean: torch.Tensor,
                            var: torch.Tensor | float) -> torch.Tensor:
    """log N(x0; mean, var) elementwise: continuous decoder for real-valued data."""
    var = torch.as_tensor(var, dtype=x0.dtype, device=x0.device)
    return -0.5 * (math.log(2.0 * math.pi) + torch.log(var) + (x0 - mean) ** 2 / var)


def bits_per_dim(nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """bits/dim = nats / (D ln 2) with D the number of data dimensions (C H W)."""
    return nats / (dims * math.log(2.0))
