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
from .schedules import NoiseSchedule, default_logsnr_endpoints, make_schedule

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

    def isotropic_mmse(self, schedule: NoiseSchedule) -> torch.Tensor:
        """E||x0_hat - x_0||^2 / d of the exact denoiser, float64 (T+1,): what
        :func:`ddpmkit.likelihood.fit_mmse` measures, in closed form."""
        return self.mmse(schedule).mean(1)


def gaussian_expected_neg_elbo(data: GaussianData, schedule: NoiseSchedule,
                               variance: D.Variance = "small",
                               decoder_variance: float | None = None) -> dict[str, float]:
    """E[-ELBO] of the exact denoiser in nats, term by term (closed form).

    ``analytic``: sigma_t^2 = sigma_q^2 + c_x0^2 mmse_t with the isotropic mmse_t (the mean
    over dimensions of the exact denoiser's error), and decoder variance mmse_1."""
    ab_T = float(schedule.alpha_bar[-1])
    omab_T = float(schedule.one_minus_alpha_bar[-1])
    m2 = data.mean**2 + data.std**2
    prior = float(0.5 * (ab_T * m2 - ab_T - math.log(omab_T)).sum())
    mmse = data.mmse(schedule)
    iso = data.isotropic_mmse(schedule) if variance == "analytic" else None
    w = D.kl_x0_weight(schedule, variance, iso)[2:]
    mis = D.variance_mismatch(schedule, variance, iso)[2:]
    cons = float((data.dims * mis + w * mmse[2:].sum(1)).sum())
    if decoder_variance is not None:
        var1 = decoder_variance
    else:
        var1 = float(iso[1]) if iso is not None else float(schedule.beta[1])
    dec = float((0.5 * math.log(2 * math.pi * var1) + mmse[1] / (2 * var1)).sum())
    return {"prior": prior, "consistency": cons, "decoder": dec, "total": prior + cons + dec}


def calibration_schedule(name: str, T: int) -> NoiseSchedule:
    """A named schedule as calibration uses it: native shapes, and ``logsnr_linear`` with the
    default end points for continuous data."""
    if name == "logsnr_linear":
        hi, lo = default_logsnr_endpoints(None)
        return make_schedule(name, T, logsnr_max=hi, logsnr_min=lo)
    return make_schedule(name, T)


def calibrate_gaussian(schedules: Sequence[str] = ("linear", "cosine"),
                       Ts: Sequence[int] = (100, 1000, 4000),
                       variances: Sequence[str] = ("small", "large", "analytic"), n: int = 2000,
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
            sched = calibration_schedule(name, T)
            den = data.exact_denoiser(sched)
            for var in variances:
                closed = gaussian_expected_neg_elbo(data, sched, var)
                mc = negative_elbo_bpd(den, x0, method="exact", variance=var,
                                       decoder=DecoderSpec(kind="gaussian"), batch_size=n,
                                       max_batch=1 << 16, seed=seed + 1, progress=progress,
                                       mmse=data.isotropic_mmse(sched))
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


# ---- gmm2d: 8 Gaussians on a circle, sampler quality against the exact denoiser ---------------
GMM2D_COMPONENTS = 8
GMM2D_RADIUS = 1.0
GMM2D_STD = 0.08
GMM2D_BUDGETS = (10, 20, 50, 100, 1000)


@dataclass(frozen=True, eq=False)
class GMM2D:
    """x_0 ~ (1/K) sum_k N(m_k, s^2 I_2), m_k on a circle; means float64 (K, 2), std s."""

    means: torch.Tensor
    std: float

    @classmethod
    def default(cls, components: int = GMM2D_COMPONENTS, radius: float = GMM2D_RADIUS,
                std: float = GMM2D_STD) -> GMM2D:
        angle = 2 * math.pi * torch.arange(components, dtype=torch.float64) / components
        return cls(radius * torch.stack([angle.cos(), angle.sin()], dim=1), float(std))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 2) float64 draws: a uniform component, then its Gaussian."""
        k = torch.randint(self.means.shape[0], (n,), generator=generator)
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return self.means[k] + self.std * z

    def exact_denoiser(self, schedule: NoiseSchedule) -> Denoiser:
        """E[x_0 | x_t] as a Denoiser, in float64 whatever the input dtype.

        With a = sqrt(alpha_bar_t), v = a^2 s^2 + (1 - alpha_bar_t): x_t | k ~ N(a m_k, v I), so
        the posterior weights are w_k = softmax_k(-||x_t - a m_k||^2 / (2 v)) (log-sum-exp, equal
        weights and variances cancel) and E[x_0 | x_t] = m_bar + (a s^2 / v)(x_t - a m_bar),
        m_bar = sum_k w_k m_k.
        """
        ab, omab, means, s2 = schedule.alpha_bar, schedule.one_minus_alpha_bar, self.means, \
            self.std**2

        def net(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if x_t.dim() != 2 or x_t.shape[1] != means.shape[1]:
                raise InputError(f"gmm2d points must be (B, 2); got {tuple(x_t.shape)}")
            x = x_t.double()
            a = ab.to(x.device)[t].sqrt().unsqueeze(1)
            v = a**2 * s2 + omab.to(x.device)[t].unsqueeze(1)
            m = means.to(x.device)
            # -||x - a m_k||^2 / 2v without the ||x||^2 term, which is the same for every k
            logits = (a * (x @ m.T) - 0.5 * a**2 * (m**2).sum(1)) / v
            m_bar = torch.softmax(logits, dim=1) @ m
            return (m_bar + (a * s2 / v) * (x - a * m_bar)).to(x_t.dtype)

        return Denoiser(net, schedule, "x0")

    def stratified_sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 2) float64 true draws with equal component counts (within one), shuffled.

        As a reference sample it carries no multinomial noise in the component counts, which
        otherwise dominates the sliced W2 between two samples of 10 000 points.
        """
        K = self.means.shape[0]
        k = (torch.arange(n) + int(torch.randint(K, (1,), generator=generator))) % K
        k = k[torch.randperm(n, generator=generator)]
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return self.means[k] + self.std * z


def steps_for_budget(sampler: str, calls: int) -> int:
    """Grid points that fit ``calls`` network calls: Heun costs 2 steps - 1, the others 1 each."""
    return max(1, (calls + 1) // 2) if sampler == "heun" else calls


def calibrate_gmm2d(samplers: Sequence[str] | None = None,
                    budgets: Sequence[int] = GMM2D_BUDGETS,
                    schedules: Sequence[str] = ("linear", "cosine"),
                    spacings: Sequence[str] = ("uniform", "logsnr_clipped"), T: int = 1000,
                    n: int = 10_000, seed: int = 0, floor_repeats: int = 5,
                    projections: int = 256, keep_samples: bool = False,
                    progress: bool = False) -> dict:
    """Sliced W2 of every (schedule, sampler, spacing, network-call budget) with the exact denoiser.

    Every row starts from the same x_T (seed ``seed``) and is compared with one fresh reference
    sample of size n (stratified over the components); the floor is the SW2 between
    ``floor_repeats`` fresh i.i.d. true samples of size n and that reference (mean and std), i.e.
    what a perfect sampler scores. Heun gets the steps whose 2 steps - 1 calls fit the budget.
    Returns {"rows": [...], "floor_mean", "floor_std", "floor", "n", "T", "seed", ...}; with
    ``keep_samples`` each row also holds its (n, 2) float32 ``samples``.
    """
    from .metrics.sliced_w2 import sliced_w2
    from .samplers import SAMPLER_NAMES, get_sampler
    from .samplers.common import SAMPLER_SPACINGS, progress_iter

    samplers = list(samplers or SAMPLER_NAMES)
    for s in samplers:
        get_sampler(s)
    for sp in spacings:
        if sp not in SAMPLER_SPACINGS:
            raise InputError(f"unknown spacing {sp!r}; choose one of {', '.join(SAMPLER_SPACINGS)}")
    for b in budgets:
        if b > T:
            raise InputError(f"--steps {b} exceeds T = {T}; use steps <= {T}")
    if n < 2 or floor_repeats < 2:
        raise InputError("gmm2d needs n >= 2 points and floor_repeats >= 2 for a spread")
    data = GMM2D.default()
    ref = data.stratified_sample(n, torch.Generator().manual_seed(seed + 1_000_003))
    floor = [sliced_w2(data.sample(n, torch.Generator().manual_seed(seed + 2_000_003 + i)), ref,
                       projections=projections, seed=seed) for i in range(floor_repeats)]
    configs = [(sc, sa, sp, b) for sc in schedules for sa in samplers for sp in spacings
               for b in budgets]
    dens = {sc: data.exact_denoiser(calibration_schedule(sc, T)) for sc in schedules}
    rows = []
    for sc, sa, sp, b in progress_iter(configs, len(configs), progress, "gmm2d"):
        res = get_sampler(sa)(dens[sc], (n, 2), steps=steps_for_budget(sa, b), spacing=sp,
                              seed=seed)
        row = {"schedule": sc, "sampler": sa, "spacing": sp, "budget": b,
               "steps": res.meta["steps"], "network_calls": res.meta["network_calls"],
               "sw2": sliced_w2(res.x, ref, projections=projections, seed=seed)}
        if keep_samples:
            row["samples"] = res.x.float()
        rows.append(row)
    f = torch.tensor(floor, dtype=torch.float64)
    return {"rows": rows, "floor_mean": float(f.mean()), "floor_std": float(f.std()),
            "floor": floor, "n": n, "T": T, "seed": seed, "projections": projections,
            "reference": "stratified true sample", "data": "8 Gaussians, radius 1, std 0.08"}
