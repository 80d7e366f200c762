"""The ELBO of any denoiser on any batch, term by term, in nats and bits/dim.

-ELBO(x_0) = L_T + sum_{t=2}^T L_t + L_1 with
  L_T = KL(q(x_T | x_0) || N(0, I))                         (prior)
  L_t = E_{x_t} KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))
      = E_{x_t} [ D m_t + w_t ||x0_hat(x_t, t) - x_0||^2 ]   (consistency, t >= 2)
  L_1 = E_{x_1} [ -log p(x_0 | x_1) ]                       (decoder)
where w_t = c_x0^2 / (2 sigma_t^2) (= C_t for sigma_t^2 = sigma_q^2) and m_t is the variance
mismatch constant (0 for the "small" variance). Each expectation over x_t uses one draw of
x_t ~ q(x_t | x_0) per term, from a seeded generator: the same seed gives the same numbers.

``exact`` evaluates every t (T network calls per batch). ``stratified`` splits t = 2..T into
equal strata and draws a few t per stratum and per example, uniformly: an unbiased estimate of
the same sum at a fraction of the cost, with a standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from . import diffusion as D
from .denoiser import Denoiser
from .errors import InputError

Decoder = Literal["discrete", "gaussian"]
Method = Literal["exact", "stratified"]


@dataclass(frozen=True)
class DecoderSpec:
    """The t = 1 decoder p(x_0 | x_1): its kind, the number of levels and its variance.

    ``kind="discrete"``: data on ``levels`` values in [-1, 1] (256 for 8-bit images, 17 for
    the bundled digits), discretized Gaussian likelihood. ``kind="gaussian"``: continuous
    Gaussian density for real-valued data. ``variance`` is sigma_1^2; None means beta_1.
    """

    kind: Decoder = "discrete"
    levels: int = 256
    variance: float | None = None

    def resolved_variance(self, denoiser: Denoiser) -> float:
        if self.variance is None:
            return float(denoiser.schedule.beta[1])
        if not self.variance > 0:
            raise InputError(f"decoder variance must be > 0; got {self.variance}")
        return float(self.variance)


def decoder_nll(denoiser: Denoiser, x0: torch.Tensor, x1: torch.Tensor,
                decoder: DecoderSpec) -> torch.Tensor:
    """-log p(x_0 | x_1) per example, (B,), in nats; the mean is mu_theta(x_1, 1) = x0_hat."""
    # at t = 1: alpha_bar_0 = 1 gives c_xt = 0 and c_x0 = 1, so the model mean is x0_hat itself
    mean = denoiser.x0_hat(x1, 1)
    var = decoder.resolved_variance(denoiser)
    if decoder.kind == "discrete":
        ll = D.discretized_gaussian_log_likelihood(x0, mean, 0.5 * math.log(var), decoder.levels)
    elif decoder.kind == "gaussian":
        ll = D.gaussian_log_likelihood(x0, mean, var)
    else:
        raise InputError(f"unknown decoder {decoder.kind!r}; choose 'discrete' or 'gaussian'")
    return -ll.flatten(1).sum(1)


def consistency_term(denoiser: Denoiser, x0: torch.Tensor, t: torch.Tensor,
                     noise: torch.Tensor, variance: D.Variance = "small") -> torch.Tensor:
    """One-draw estimate of L_t = D m_t + w_t ||x0_hat(x_t, t) - x_0||^2, (B,), for t >= 2."""
    sched = denoiser.schedule
    if int(t.min()) < 2:
        raise InputError("consistency terms are defined for t >= 2; t = 1 is the decoder")
    x_t = D.q_sample(sched, x0, t, noise)
    x0_hat = denoiser.x0_hat(x_t, t)
    sq = ((x0_hat - x0) ** 2).flatten(1).sum(1).double()
    w = D.mean_weight(sched, variance).to(t.device)[t]
    m = D.variance_mismatch(sched, variance).to(t.device)[t]
    dims = x0[0].numel()
    return dims * m + w * sq


@dataclass
class ELBOTerms:
    """Per-example terms of -ELBO in nats (float64).

    prior: (B,); decoder: (B,); consistency_by_t: (B, T+1) with the estimate of L_t in column t
    (columns 0 and 1 are 0; for ``stratified`` only sampled columns are filled, already scaled
    so that their row sum is the unbiased estimate of sum_t L_t).
    """

    prior: torch.Tensor
    consistency_by_t: torch.Tensor
    decoder: torch.Tensor
    dims: int

    @property
    def consistency(self) -> torch.Tensor:
        return self.consistency_by_t.sum(1)

    @property
    def total(self) -> torch.Tensor:
        """-ELBO per example, nats, (B,)."""
        return self.prior + self.consistency + self.decoder


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """multinomial over a CPU table needs a CPU generator (a CUDA one is used for the noise)."""
    if generator is None or generator.device.type == "cpu":
        return generator
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator,
                                                           device=generator.device)))


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


@torch.no_grad()
def elbo_terms(denoiser: Denoiser, x0: torch.Tensor, *, method: Method = "exact",
               variance: D.Variance = "small", decoder: DecoderSpec | None = None,
               strata: int = 10, per_stratum: int = 1, max_batch: int = 256,
               proposal: str = "weight",
               generator: torch.Generator | None = None) -> ELBOTerms:
    """The terms of -ELBO(x_0) for a batch x0 (B, ...), nats, float64.

    ``exact``: every t = 2..T with one x_t draw each (T - 1 consistency terms; t values are
    batched together so that one network call sees about ``max_batch`` examples).
    ``stratified``: t = 2..T split into ``strata`` contiguous strata of (almost) equal size;
    per example ``per_stratum`` t's drawn in each from q(t), and L_t weighted by
    1 / (q(t) per_stratum) (strata * per_stratum + 1 network calls). Unbiased for the same sum.
    ``proposal="weight"`` (default) draws q(t) proportional to the KL's weight on the x0-MSE
    (C_t for the small variance), so L_t / q(t) varies only as the denoiser's error does;
    ``"uniform"`` draws t uniformly in the stratum.
    """
    decoder = decoder or DecoderSpec()
    sched = denoiser.schedule
    T = sched.T
    B = x0.shape[0]
    if not torch.isfinite(x0).all():
        raise InputError("x0 contains NaN or Inf; clean the data before evaluating the ELBO")
    dims = x0[0].numel()
    prior = D.prior_kl(sched, x0.double()).flatten(1).sum(1)
    cons = torch.zeros(B, T + 1, dtype=torch.float64, device=x0.device)
    if method == "exact":
        # several t per network call: the batch is x0 repeated for a chunk of t values
        chunk = max(1, max_batch // B)
        for lo in range(2, T + 1, chunk):
            ts = torch.arange(lo, min(lo + chunk, T + 1), device=x0.device)
            t = ts.repeat_interleave(B)
            xr = x0.repeat(ts.numel(), *([1] * (x0.dim() - 1)))
            term = consistency_term(denoiser, xr, t, _randn(xr.shape, x0, generator), variance)
            cons[:, lo:lo + ts.numel()] = term.reshape(ts.numel(), B).T
    elif method == "stratified":
        if T >= 2:
            if strata < 1 or per_stratum < 1:
                raise InputError("strata and per_stratum must be >= 1")
            if proposal not in ("uniform", "weight"):
                raise InputError(f"unknown proposal {proposal!r}; choose 'uniform' or 'weight'")
            edges = torch.linspace(2, T + 1, min(strata, T - 1) + 1).round().long().tolist()
            rows = torch.arange(B, device=x0.device)
            # q(t) inside a stratum: uniform, or proportional to the KL's weight on the x0-MSE
            # (C_t for "small"), which spans many orders of magnitude within the first strata
            q = (torch.ones(T + 1, dtype=torch.float64) if proposal == "uniform"
                 else D.mean_weight(sched, variance).clone())
            q[:2] = 0.0
            for lo, hi in zip(edges[:-1], edges[1:]):
                p = q[lo:hi] / q[lo:hi].sum()
                for _ in range(per_stratum):
                    k = torch.multinomial(p, B, replacement=True, generator=_cpu(generator))
                    t = (lo + k).to(x0.device)
                    term = consistency_term(denoiser, x0, t, _randn(x0.shape, x0, generator),
                                            variance)
                    # unbiased: E_q[L_t / q(t)] = sum_t L_t over the stratum
                    cons[rows, t] += term / (p[k].to(term.device) * per_stratum)
    else:
        raise InputError(f"unknown method {method!r}; choose 'exact' or 'stratified'")
    t1 = torch.ones(B, dtype=torch.int64, device=x0.device)
    x1 = D.q_sample(sched, x0, t1, _randn(x0.shape, x0, generator))
    dec = decoder_nll(denoiser, x0, x1, decoder).double()
    return ELBOTerms(prior=prior, consistency_by_t=cons, decoder=dec, dims=dims)


@dataclass
class NLLResult:
    """Negative ELBO over a dataset, in bits/dim, with its standard error and breakdown.

    ``se_bpd`` is the standard error of the mean over examples (it includes the Monte Carlo
    noise of the x_t draws and, for ``stratified``, of the t draws). ``terms_bpd`` splits the
    mean into prior, consistency and decoder; ``by_t_bpd`` is the mean L_t per t (exact only);
    rate = prior + consistency, distortion = decoder (Ho et al., Table 2).
    """

    bpd: float
    se_bpd: float
    n: int
    dims: int
    method: str
    network_calls_per_example: int
    terms_bpd: dict[str, float] = field(default_factory=dict)
    by_t_bpd: list[float] | None = None

    @property
    def rate_bpd(self) -> float:
        return self.terms_bpd["prior"] + self.terms_bpd["consistency"]

    @property
    def distortion_bpd(self) -> float:
        return self.terms_bpd["decoder"]

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("bpd", "se_bpd", "n", "dims", "method",
                                           "network_calls_per_example", "terms_bpd")}
        d["rate_bpd"], d["distortion_bpd"] = self.rate_bpd, self.distortion_bpd
        if self.by_t_bpd is not None:
            d["by_t_bpd"] = self.by_t_bpd
        return d


def negative_elbo_bpd(denoiser: Denoiser, data: torch.Tensor, *, method: Method = "exact",
                      variance: D.Variance = "small", decoder: DecoderSpec | None = None,
                      batch_size: int = 256, strata: int = 10, per_stratum: int = 1,
                      max_batch: int = 256, proposal: str = "weight", seed: int = 0,
                      progress: bool = False) -> NLLResult:
    """Mean -ELBO of ``data`` (N, ...) in bits/dim, batch by batch, reproducible from ``seed``."""
    if data.shape[0] == 0:
        raise InputError("no examples to evaluate: the data split is empty")
    gen = torch.Generator(device=data.device).manual_seed(seed)
    totals, priors, conss, decs = [], [], [], []
    by_t = None
    starts = range(0, data.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"-ELBO ({method})", unit="batch")
    for i in starts:
        x0 = data[i:i + batch_size]
        terms = elbo_terms(denoiser, x0, method=method, variance=variance, decoder=decoder,
                           strata=strata, per_stratum=per_stratum, max_batch=max_batch,
                           proposal=proposal, generator=gen)
        totals.append(terms.total)
        priors.append(terms.prior)
        conss.append(terms.consistency)
        decs.append(terms.decoder)
        if method == "exact":
            s = terms.consistency_by_t.sum(0)
            by_t = s if by_t is None else by_t + s
    return summarize_nll(torch.cat(totals), torch.cat(priors), torch.cat(conss),
                         torch.cat(decs), by_t, dims=data[0].numel(), T=denoiser.T,
                         method=method, strata=strata, per_stratum=per_stratum)


def summarize_nll(total: torch.Tensor, prior: torch.Tensor, consistency: torch.Tensor,
                  decoder: torch.Tensor, by_t_sum: torch.Tensor | None, *, dims: int, T: int,
                  method: str, strata: int, per_stratum: int) -> NLLResult:
    """Per-example -ELBO terms in nats (each (N,)) -> the dataset's NLLResult in bits/dim.

    ``by_t_sum``: the sum over examples of L_t, (T+1,), or None (not reported)."""
    n = total.numel()
    scale = 1.0 / (dims * math.log(2.0))
    se = float(total.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    calls = T if method == "exact" else min(strata, max(T - 1, 1)) * per_stratum + 1
    return NLLResult(
        bpd=float(total.mean()) * scale, se_bpd=se * scale, n=n, dims=dims, method=method,
        network_calls_per_example=calls,
        terms_bpd={"prior": float(prior.mean()) * scale,
                   "consistency": float(consistency.mean()) * scale,
                   "decoder": float(decoder.mean()) * scale},
        by_t_bpd=None if by_t_sum is None else (by_t_sum / n * scale).tolist(),
    )
