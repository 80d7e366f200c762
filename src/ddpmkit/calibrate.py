"""Closed-form ground truth: data whose exact denoiser E[x_0 | x_t] is known.

Gaussian data x_0 ~ N(m, diag(s^2)): with a_t = sqrt(alpha_bar_t) and n_t = 1 - alpha_bar_t,
  E[x_0 | x_t]  = m + a_t s^2 / (a_t^2 s^2 + n_t) (x_t - a_t m)
  MMSE_t        = E||E[x_0|x_t] - x_0||^2 per dim = s^2 n_t / (a_t^2 s^2 + n_t)
  NLL (nats)    = sum_i 1/2 log(2 pi e s_i^2)          (the differential entropy)
and the expected -ELBO of the exact denoiser, in closed form:
  prior         1/2 sum_i (alpha_bar_T (m_i^2 + s_i^2) - alpha_bar_T - log(1 - alpha_bar_T))
  t >= 2        sum_i (m_t + w_t MMSE_t,i)      (w_t = c_x0^2/(2 sigma_t^2), m_t the mismatch)
  decoder       sum_i (1/2 log(2 pi sigma_1^2) + MMSE_1,i / (2 sigma_1^2))
This is independent of the Monte Carlo code in ``ddpmkit.likelihood`` and checks it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from . import diffusion as D
from .denoiser import Denoiser
from .errors import InputError
from .likelihood import DecoderSpec, negative_elbo_bpd
from .schedules import NoiseSchedule, make_schedule

GAUSSIAN_MEAN = (0.3, -0.5, 0.1, 0.8)
GAUSSIAN_STD = (0.5, 0.2, 1.0, 0.05)


@dataclass(frozen=True, eq=False)
class GaussianData:
    """x_0 ~ N(mean, diag(std^2)); mean and std are float64 (d,)."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def default(cls) -> GaussianData:
        return cls(torch.tensor(GAUSSIAN_MEAN, dtype=torch.float64),
                   torch.tensor(GAUSSIAN_STD, dtype=torch.float64))

    @property
    def dims(self) -> int:
        return self.mean.numel()

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, d) float64 draws."""
        z = torch.randn(n, self.dims, generator=generator, dtype=torch.float64)
        return self.mean + self.std * z

    def entropy_nats(self) -> float:
        """The true NLL E[-log p(x_0)] = sum_i 1/2 log(2 pi e s_i^2)."""
        return float(0.5 * torch.log(2 * math.pi * math.e * self.std**2).sum())

    def exact_denoiser(self, schedule: NoiseSchedule) -> Denoiser:
        """The Bayes-optimal x0_hat(x_t, t) = E[x_0 | x_t] as a Denoiser."""
        ab = schedule.alpha_bar
        omab = schedule.one_minus_alpha_bar
        mean, var = self.mean, self.std**2

        def net(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            a = torch.sqrt(ab[t]).unsqueeze(1)
            n = omab[t].unsqueeze(1)
            gain = a * var / (a**2 * var + n)
            out = mean + gain * (x_t.double() - a * mean)
            return out.to(x_t.dtype)

        return Denoiser(net, schedule, "x0")

    def mmse(self, schedule: NoiseSchedule) -> torch.Tensor:
        """MMSE_t per dimension, float64 (T+1, d)."""
        ab = schedule.alpha_bar.unsqueeze(1)
        n = schedule.one_minus_alpha_bar.unsqueeze(1)
        var = self.std**2
        return var * n / (ab * var + n)


def gaussian_expected_neg_elbo(data: GaussianData, schedule: NoiseSchedule,
                               variance: D.Variance = "small",
                               decoder_variance: float | None = None) -> dict[str, float]:
    """E[-ELBO] of the exact denoiser in nats, term by term (closed form)."""
    ab_T = float(schedule.alpha_bar[-1])
    omab_T = float(schedule.one_minus_alpha_bar[-1])
    m2 = data.mean**2 + data.std**2
    prior = float(0.5 * (ab_T * m2 - ab_T - math.log(omab_T)).sum())
    mmse = data.mmse(schedule)
    w = D.mean_weight(schedule, variance)[2:]
    mis = D.variance_mismatch(schedule, variance)[2:]
    cons = float((data.dims * mis + w * mmse[2:].sum(1)).sum())
    var1 = float(schedule.beta[1]) if decoder_variance is None else decoder_variance
    dec = float((0.5 * math.log(2 * math.pi * var1) + mmse[1] / (2 * var1)).sum())
    return {"prior": prior, "consistency": cons, "decoder": dec, "total": prior + cons + dec}


def calibrate_gaussian(schedules: Sequence[str] = ("linear", "cosine"),
                       Ts: Sequence[int] = (100, 1000, 4000),
                       variances: Sequence[str] = ("small", "large"), n: int = 2000,
                       seed: int = 0, progress: bool = False) -> list[dict]:
    """Rows per (schedule, T, variance): true NLL, closed-form and Monte Carlo -ELBO, bits/dim.

    The Monte Carlo value comes from :func:`ddpmkit.likelihood.negative_elbo_bpd` (exact, all T
    terms) on ``n`` fresh draws; ``mc_z`` = (MC - closed form) / SE should be within +-3.
    """
    if n < 2:
        raise InputError(f"--n must be >= 2 to estimate a standard error; got {n}")
    data = GaussianData.default()
    d = data.dims
    to_bpd = 1.0 / (d * math.log(2.0))
    # the data and the x_t noise must come from different streams: with one seed for both, the
    # first noise draw would equal the standardized data and bias the t = 2 term
    x0 = data.sample(n, torch.Generator().manual_seed(seed))
    true_bpd = data.entropy_nats() * to_bpd
    rows = []
    for name in schedules:
        for T in Ts:
            sched = make_schedule(name, T)
            den = data.exact_denoiser(sched)
            for var in variances:
                closed = gaussian_expected_neg_elbo(data, sched, var)
                mc = negative_elbo_bpd(den, x0, method="exact", variance=var,
                                       decoder=DecoderSpec(kind="gaussian"), batch_size=n,
                                       max_batch=1 << 16, seed=seed + 1, progress=progress)
                neg = closed["total"] * to_bpd
                rows.append({
                    "schedule": name, "T": T, "variance": var,
                    "true_nll_bpd": true_bpd,
                    "neg_elbo_bpd": neg,
                    "neg_elbo_mc_bpd": mc.bpd,
                    "neg_elbo_mc_se_bpd": mc.se_bpd,
                    "gap_bpd": neg - true_bpd,
                    "mc_z": (mc.bpd - neg) / mc.se_bpd,
                    "terms_bpd": {k: v * to_bpd for k, v in closed.items() if k != "total"},
                    "n": n,
                })
    return rows
