"""Loss weightings as weights w(t) on the x0-MSE, timestep samplers, and the training loss.

Every objective is one regression on the clean data, L = E[w(t) ||x0_hat - x_0||^2],
with a different weight per t (per data dimension; see docs/theory.md):

  elbo     C_t = (snr_{t-1} - snr_t)/2 for t >= 2 and 1/(2 sigma_1^2) at t = 1 (Gaussian decoder)
  simple   snr_t                (Ho's unweighted eps-MSE: ||eps_hat - eps||^2 = snr_t ||.||^2)
  snr      max(snr_t, 1)        (truncated SNR, Salimans & Ho 2022)
  min_snr  min(snr_t, gamma)    (Hang et al. 2023, gamma = 5)
  p2       snr_t / (k + snr_t)^gamma  (Choi et al. 2022, k = 1, gamma = 1)
  v        snr_t + 1            (v-MSE: ||v_hat - v||^2 = (snr_t + 1) ||.||^2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from . import diffusion as D
from .errors import InputError
from .schedules import NoiseSchedule

Weighting = Literal["elbo", "simple", "snr", "min_snr", "p2", "v"]
WEIGHTINGS: tuple[str, ...] = ("elbo", "simple", "snr", "min_snr", "p2", "v")
TimestepSampling = Literal["uniform", "weight", "logsnr", "importance"]
TIMESTEP_SAMPLINGS: tuple[str, ...] = ("uniform", "weight", "logsnr", "importance")


def loss_weights(schedule: NoiseSchedule, weighting: Weighting, *, gamma: float = 5.0,
                 p2_k: float = 1.0, p2_gamma: float = 1.0,
                 decoder_variance: float | None = None) -> torch.Tensor:
    """w(t) on the per-dimension x0-MSE, float64 (T+1,), w[0] = 0.

    ``elbo`` at t = 1 uses a Gaussian decoder with variance sigma_1^2 (beta_1 unless given),
    whose -log-likelihood is ||x0_hat - x_0||^2 / (2 sigma_1^2) plus a constant.
    """
    snr = schedule.snr
    if weighting == "elbo":
        w = D.consistency_weight(schedule).clone()
        var1 = float(schedule.beta[1]) if decoder_variance is None else decoder_variance
        w[1] = 1.0 / (2.0 * var1)
    elif weighting == "simple":
        w = snr.clone()
    elif weighting == "snr":
        w = snr.clamp(min=1.0)
    elif weighting == "min_snr":
        w = snr.clamp(max=gamma)
    elif weighting == "p2":
        w = snr / (p2_k + snr) ** p2_gamma
    elif weighting == "v":
        w = snr + 1.0
    else:
        raise InputError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    w[0] = 0.0
    return w


def logsnr_step_proposal(schedule: NoiseSchedule) -> torch.Tensor:
    """q(t) proportional to the log-SNR step lambda_{t-1} - lambda_t, float64 (T+1,), q[0] = 0.

    This is the continuous-time ELBO's own measure (Kingma et al. 2021: the loss is an integral
    over lambda), so under it the importance-weighted ELBO weight C_t / (T q(t)) is ~snr_t / 2
    times a constant: ten orders of magnitude of C_t become a smooth curve. t = 1 (the decoder,
    lambda_0 = +inf) gets the share of its neighbour t = 2. For a log-SNR-linear schedule
    this is the uniform distribution.
    """
    T = schedule.T
    q = torch.zeros(T + 1, dtype=torch.float64)
    if T == 1:
        q[1] = 1.0
        return q
    lam = schedule.log_snr
    q[2:] = lam[1:-1] - lam[2:]
    q[1] = q[2]
    return q / q.sum()


def raw_weight_proposal(schedule: NoiseSchedule, weights: torch.Tensor,
                        parameterization: D.Parameterization,
                        sigma_data: float = D.EDM_SIGMA_DATA) -> torch.Tensor:
    """q(t) proportional to w_t (d x0_hat / d raw)^2, float64 (T+1,), q[0] = 0.

    w_t ||x0_hat - x_0||^2 = w_t g_t^2 ||raw error||^2 with g_t the raw output's scale in x0_hat
    (:func:`ddpmkit.diffusion.raw_error_scale`). Drawing t from this q with importance weight
    1/(T q(t)) gives every drawn example's *raw* squared error the same weight, so the loss is a
    plain regression of the network's output (a v-MSE for v) whose expectation is the weighted
    x0 loss. For the ELBO with a v output: q(t >= 2) ~ C_t (1 - alpha_bar_t), about
    alpha_bar_t times the log-SNR step, and the decoder q(1) ~ 1/2, about 1/8 of all draws;
    with uniform t instead, t = 1 is one draw in a thousand with ~70 times the weight of its
    neighbour, and its rare, huge gradients cost 0.2 bits/dim (docs/likelihood.md).
    """
    q = weights.to(torch.float64) * D.raw_error_scale(schedule, parameterization,
                                                      sigma_data) ** 2
    q[0] = 0.0
    if not torch.isfinite(q).all() or not float(q.sum()) > 0:
        raise InputError("the weight proposal needs finite weights with a positive sum")
    return q / q.sum()


class TimestepSampler:
    """Draws t in 1..T per example with probabilities p(t), and the importance weight 1/(T p(t)).

    ``uniform``: p(t) = 1/T. ``weight``: p(t) proportional to the loss weight on the network's
    raw output (:func:`raw_weight_proposal`). ``logsnr``: p(t) proportional to the log-SNR step
    (:func:`logsnr_step_proposal`). Both take their table as ``proposal``. ``importance``: iDDPM's
    loss-second-moment sampler, p(t) proportional to sqrt(E[L_t^2]) over the last ``history``
    losses seen at t, mixed with 1 % uniform; uniform until every t has ``history`` entries
    (the warm-up). The loss is multiplied by 1/(T p(t)), so its expectation is unchanged.

    ``stratified``: the batch's B draws are u_i = (i + U_i)/B pushed through the inverse CDF of
    p (one draw per 1/B of probability mass, in shuffled order): still p-distributed each, but
    the batch covers the whole range of t, so the batch mean has lower variance (VDM's
    low-discrepancy sampler). State is plain tensors (``state_dict``) for exact resume.
    """

    def __init__(self, T: int, kind: TimestepSampling = "uniform", history: int = 10,
                 uniform_mix: float = 0.01, *, proposal: torch.Tensor | None = None,
                 stratified: bool = False) -> None:
        if kind not in TIMESTEP_SAMPLINGS:
            raise InputError(f"unknown timestep sampling {kind!r}; "
                             f"choose one of {', '.join(TIMESTEP_SAMPLINGS)}")
        fixed = kind in ("weight", "logsnr")
        if fixed and (proposal is None or proposal.shape != (T + 1,)):
            raise InputError(f"timestep sampling {kind!r} needs its proposal table (T+1,)")
        self.T, self.kind, self.history, self.uniform_mix = T, kind, history, uniform_mix
        self.stratified = stratified
        self._fixed = proposal.to(torch.float64) / proposal.sum() if fixed else None
        self.loss_history = torch.zeros(T + 1, history, dtype=torch.float64)
        self.counts = torch.zeros(T + 1, dtype=torch.int64)

    def probabilities(self) -> torch.Tensor:
        """p(t) as float64 (T+1,), p[0] = 0."""
        if self._fixed is not None:
            return self._fixed.clone()
        p = torch.zeros(self.T + 1, dtype=torch.float64)
        if self.kind == "uniform" or bool((self.counts[1:] < self.history).any()):
            p[1:] = 1.0 / self.T
            return p
        rms = torch.sqrt((self.loss_history[1:] ** 2).mean(1))
        p[1:] = rms / rms.sum()
        p[1:] = p[1:] * (1.0 - self.uniform_mix) + self.uniform_mix / self.T
        return p

    def sample(self, batch: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(t int64 (B,), importance weight float64 (B,) = 1/(T p(t)))."""
        p = self.probabilities()
        if self.stratified:
            u = (torch.arange(batch, dtype=torch.float64)
                 + torch.rand(batch, generator=generator, dtype=torch.float64)) / batch
            u = u[torch.randperm(batch, generator=generator)]
            cdf = torch.cumsum(p, 0)
            cdf = cdf / cdf[-1]
            t = torch.searchsorted(cdf, u, right=True).clamp(1, self.T)
        else:
            t = torch.multinomial(p, batch, replacement=True, generator=generator)
        weight = 1.0 / (self.T * p[t])
        return t.to(device), weight.to(device)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-example losses at their t (detached, on CPU; ``importance`` only)."""
        if self.kind != "importance":
            return
        for ti, li in zip(t.tolist(), losses.detach().double().cpu().tolist()):
            k = int(self.counts[ti])
            self.loss_history[ti, k % self.history] = li
            self.counts[ti] += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"loss_history": self.loss_history.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.loss_history = state["loss_history"].clone().to(torch.float64)
        self.counts = state["counts"].clone().to(torch.int64)


def make_timestep_sampler(kind: TimestepSampling, schedule: NoiseSchedule,
                          weights: torch.Tensor, parameterization: D.Parameterization = "v",
                          sigma_data: float = D.EDM_SIGMA_DATA,
                          stratified: bool = False, uniform_mix: float = 0.0,
                          decoder_share: float | None = None) -> TimestepSampler:
    """The TimestepSampler of a training run, with its proposal table built from the chain,
    the loss weights and the parameterization. ``uniform_mix`` m (``weight`` and ``logsnr``):
    q = (1 - m) q + m / T, still unbiased under its importance weights; it trains the high-noise
    steps that q ~ C_t g_t^2 visits rarely, which decide a sample's shape (docs/likelihood.md)."""
    table = None
    if kind == "weight":
        table = raw_weight_proposal(schedule, weights, parameterization, sigma_data)
    elif kind == "logsnr":
        table = logsnr_step_proposal(schedule)
    if table is not None and uniform_mix > 0:
        flat = torch.full_like(table, 1.0 / schedule.T)
        flat[0] = 0.0
        table = (1.0 - uniform_mix) * table + uniform_mix * flat
    if table is not None and decoder_share is not None and schedule.T > 1:
        # q(1) = share, the rest rescaled: the t = 1 decoder's share of the draws
        table = table.clone()
        table[2:] = table[2:] / table[2:].sum() * (1.0 - decoder_share)
        table[1] = decoder_share
    return TimestepSampler(schedule.T, kind, proposal=table, stratified=stratified)


@dataclass
class LossOutput:
    """loss: scalar to minimise; per_example: (B,) weighted losses; t: (B,) timesteps."""

    loss: torch.Tensor
    per_example: torch.Tensor
    t: torch.Tensor
    mse: torch.Tensor


def diffusion_loss(denoiser, x0: torch.Tensor, weights: torch.Tensor, t: torch.Tensor,
                   noise: torch.Tensor, importance: torch.Tensor | None = None,
                   normalizer: float = 1.0, y: torch.Tensor | None = None) -> LossOutput:
    """E[w(t) ||x0_hat(x_t, t) - x_0||^2 / D] / normalizer, optionally importance-weighted.

    x0, noise: (B, ...); t: int64 (B,); weights: float64 (T+1,) from :func:`loss_weights`;
    importance: (B,) = 1/(T p(t)) when t is not uniform. ``normalizer`` rescales to a
    convenient magnitude (e.g. the mean of w over t) without changing the minimiser.
    y: class labels (B,) of a class-conditional denoiser (the null class where dropped).
    """
    x_t = D.q_sample(denoiser.schedule, x0, t, noise)
    x0_hat = denoiser.x0_hat(x_t, t) if y is None else denoiser.x0_hat(x_t, t, y)
    # half-precision outputs (bf16 autocast) are promoted; float32/float64 stay as they are
    dtype = torch.promote_types(x0.dtype, torch.float32)
    mse = ((x0_hat.to(dtype) - x0.to(dtype)) ** 2).flatten(1).mean(1)
    w = (weights.to(x0.device)[t] / normalizer).to(mse.dtype)
    per = w * mse
    if importance is not None:
        per_for_loss = per * importance.to(per.dtype)
    else:
        per_for_loss = per
    return LossOutput(loss=per_for_loss.mean(), per_example=per.detach(), t=t, mse=mse.detach())
