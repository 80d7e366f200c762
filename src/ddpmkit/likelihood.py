"""The ELBO of any denoiser on any batch, term by term, in nats and bits/dim.

-ELBO(x_0) = L_T + sum_{t=2}^T L_t + L_1 with
  L_T = KL(q(x_T | x_0) || N(0, I))                         (prior)
  L_t = E_{x_t} KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))
      = E_{x_t} [ D m_t + w_t ||x0_hat(x_t, t) - x_0||^2 ]   (consistency, t >= 2)
  L_1 = E_{x_1} [ -log p(x_0 | x_1) ]                       (decoder)
where w_t = c_x0^2 / (2 sigma_t^2) (= C_t for sigma_t^2 = sigma_q^2) and m_t is the variance
mismatch constant (0 for the "small" variance). Each expectation over x_t uses one draw of
x_t ~ q(x_t | x_0) per term, from a seeded generator: the same seed gives the same numbers.

One estimator, :class:`ELBOEstimator`, holds every setting (method, variance, decoder, strata,
per_stratum, proposal, max_batch, batch_size) with one set of defaults; the Python API,
``ddpmkit eval``, the demo and torchrun all go through its :meth:`ELBOEstimator.evaluate`.
``exact`` evaluates every t (T network calls per example). ``stratified`` splits t = 2..T into
equal strata and draws a few t per stratum and per example from a proposal q(t): an unbiased
estimate of the same sum at a fraction of the cost, with a standard error.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from . import diffusion as D
from .denoiser import Denoiser
from .errors import InputError
from .progress import progress as progress_bar

Decoder = Literal["discrete", "gaussian", "levels"]
DECODERS: tuple[str, ...] = ("discrete", "gaussian", "levels")
Method = Literal["exact", "stratified"]
METHODS: tuple[str, ...] = ("exact", "stratified")
Proposal = Literal["weight", "uniform"]
PROPOSALS: tuple[str, ...] = ("weight", "uniform")


@dataclass(frozen=True)
class DecoderSpec:
    """The t = 1 decoder p(x_0 | x_1): its kind, the number of levels and its variance.

    ``kind="discrete"``: data on ``levels`` values in [-1, 1] (256 for 8-bit images, 17 for
    the bundled digits), discretized Gaussian around x0_hat(x_1, 1). ``kind="levels"``: the
    exact K-level decoder P(x0 = v_k | x_1) proportional to q(x_1 | v_k) (no network; VDM).
    ``kind="gaussian"``: continuous Gaussian density for real-valued data. ``variance`` is
    sigma_1^2 of the Gaussian decoders; None means beta_1 (for ``gaussian`` with the analytic
    variance: mmse_1).
    """

    kind: Decoder = "discrete"
    levels: int = 256
    variance: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in DECODERS:
            raise InputError(f"unknown decoder {self.kind!r}; choose one of {', '.join(DECODERS)}")
        if self.kind in ("discrete", "levels") and (not isinstance(self.levels, int)
                                                    or self.levels < 2):
            raise InputError(f"levels must be a whole number >= 2; got {self.levels!r}")
        if self.variance is not None and not self.variance > 0:
            raise InputError(f"decoder variance must be > 0; got {self.variance}")

    def resolved_variance(self, denoiser: Denoiser, mmse: torch.Tensor | None = None) -> float:
        """sigma_1^2: the given variance; else, for the continuous Gaussian decoder with the
        analytic variance (``mmse`` given), mmse_1, the optimum for Gaussian errors; else beta_1.

        The discretized decoder keeps beta_1 under the analytic variance: a denoiser's errors at
        t = 1 are heavy-tailed (most pixels exact, a few a level off), and a variance fitted to
        their mean square prices the rare misses far too high (measured: docs/likelihood.md).
        """
        if self.variance is not None:
            return float(self.variance)
        if mmse is not None and self.kind == "gaussian" and float(mmse[1]) > 0:
            return float(mmse[1])
        return float(denoiser.schedule.beta[1])


def decoder_nll(denoiser: Denoiser, x0: torch.Tensor, x1: torch.Tensor,
                decoder: DecoderSpec, mmse: torch.Tensor | None = None,
                y: torch.Tensor | None = None) -> torch.Tensor:
    """-log p(x_0 | x_1) per example, (B,), in nats; the mean is mu_theta(x_1, 1) = x0_hat."""
    if decoder.kind == "levels":
        sched = denoiser.schedule
        ll = D.levels_log_likelihood(x0, x1, math.sqrt(float(sched.alpha_bar[1])),
                                     math.sqrt(float(sched.one_minus_alpha_bar[1])),
                                     decoder.levels)
        return -ll.flatten(1).sum(1)
    # at t = 1: alpha_bar_0 = 1 gives c_xt = 0 and c_x0 = 1, so the model mean is x0_hat itself
    mean = denoiser.x0_hat(x1, 1, y)
    var = decoder.resolved_variance(denoiser, mmse)
    if decoder.kind == "discrete":
        ll = D.discretized_gaussian_log_likelihood(x0, mean, 0.5 * math.log(var), decoder.levels)
    else:
        ll = D.gaussian_log_likelihood(x0, mean, var)
    return -ll.flatten(1).sum(1)


def consistency_term(denoiser: Denoiser, x0: torch.Tensor, t: torch.Tensor,
                     noise: torch.Tensor, variance: D.Variance = "small",
                     mmse: torch.Tensor | None = None,
                     y: torch.Tensor | None = None) -> torch.Tensor:
    """One-draw estimate of L_t = D m_t + w_t ||x0_hat(x_t, t) - x_0||^2, (B,), for t >= 2."""
    sched = denoiser.schedule
    if int(t.min()) < 2:
        raise InputError("consistency terms are defined for t >= 2; t = 1 is the decoder")
    x_t = D.q_sample(sched, x0, t, noise)
    x0_hat = denoiser.x0_hat(x_t, t, y)
    sq = ((x0_hat - x0) ** 2).flatten(1).sum(1).double()
    w = D.kl_x0_weight(sched, variance, mmse).to(t.device)[t]
    m = D.variance_mismatch(sched, variance, mmse).to(t.device)[t]
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


def stratum_proposal(denoiser: Denoiser, variance: D.Variance, proposal: Proposal,
                     mmse: torch.Tensor | None = None) -> torch.Tensor:
    """Unnormalised q(t) over t = 2..T for the stratified estimator, float64 (T+1,).

    ``weight``: proportional to the KL's weight on the squared error of the network's *raw*
    output, w_t (d x0_hat / d raw)^2 (:func:`ddpmkit.diffusion.raw_error_scale`): if the raw
    error is about the same at every t, L_t / q(t) is then flat. For an x0 output that is
    w_t itself (C_t for the small variance); for v and eps it is ~ the log-SNR step.
    ``uniform``: the same for every t.
    """
    if proposal == "uniform":
        q = torch.ones(denoiser.T + 1, dtype=torch.float64)
    elif proposal == "weight":
        q = D.kl_x0_weight(denoiser.schedule, variance, mmse).clone()
        if denoiser.parameterization != "x0":
            q = q * D.raw_error_scale(denoiser.schedule, denoiser.parameterization,
                                      denoiser.sigma_data) ** 2
    else:
        raise InputError(f"unknown proposal {proposal!r}; choose one of {', '.join(PROPOSALS)}")
    q[:2] = 0.0
    return q


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


@dataclass(frozen=True)
class ELBOEstimator:
    """Every setting of the -ELBO estimate, with the one set of defaults.

    method: ``exact`` (all T terms, one x_t draw each) or ``stratified`` (``strata`` equal
    strata of t = 2..T, ``per_stratum`` draws from q(t) in each, importance-weighted).
    variance: sigma_t^2 of p_theta: ``small`` (sigma_q^2), ``large`` (beta_t) or ``analytic``
    (sigma_q^2 + c_x0^2 mmse_t; needs ``mmse`` from :func:`fit_mmse`). decoder: the t = 1
    term. proposal: q(t) inside a stratum (see :func:`stratum_proposal`). max_batch: about
    how many (example, t) pairs one network call sees (``exact`` batches several t together).
    batch_size: examples per batch; batch i is the unit that ranks share under torchrun.
    """

    method: Method = "exact"
    variance: D.Variance = "small"
    decoder: DecoderSpec = DecoderSpec()
    strata: int = 50
    per_stratum: int = 1
    proposal: Proposal = "weight"
    max_batch: int = 4096
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.variance not in D.VARIANCES:
            raise InputError(f"unknown variance {self.variance!r}; choose one of "
                             f"{', '.join(D.VARIANCES)}")
        if self.proposal not in PROPOSALS:
            raise InputError(f"unknown proposal {self.proposal!r}; choose one of "
                             f"{', '.join(PROPOSALS)}")
        if not isinstance(self.decoder, DecoderSpec):
            raise InputError("decoder must be a DecoderSpec")
        for name in ("strata", "per_stratum", "max_batch", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a whole number >= 1; got {v!r}")

    def replace(self, **changes: Any) -> ELBOEstimator:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Every setting, JSON-ready (recorded whole in each eval result)."""
        return dataclasses.asdict(self)

    def calls_per_example(self, T: int) -> int:
        """Network calls per example: T (exact) or strata * per_stratum + 1 (stratified)."""
        if self.method == "exact":
            return T
        return min(self.strata, max(T - 1, 1)) * self.per_stratum + 1

    @torch.no_grad()
    def terms(self, denoiser: Denoiser, x0: torch.Tensor, *,
              generator: torch.Generator | None = None,
              mmse: torch.Tensor | None = None, y: torch.Tensor | None = None) -> ELBOTerms:
        """The terms of -ELBO(x_0) for a batch x0 (B, ...), nats, float64; with labels y (B,)
        of a class-conditional denoiser, the terms of -ELBO(x_0 | y).

        ``exact``: every t = 2..T with one x_t draw each (t values are batched together so that
        one network call sees about ``max_batch`` examples). ``stratified``: per example
        ``per_stratum`` t's drawn in each stratum from q(t), and L_t weighted by
        1 / (q(t) per_stratum). Unbiased for the same sum.
        """
        sched = denoiser.schedule
        T = sched.T
        B = x0.shape[0]
        if not torch.isfinite(x0).all():
            raise InputError("x0 contains NaN or Inf; clean the data before evaluating the ELBO")
        if self.variance == "analytic" and mmse is None:
            raise InputError("variance 'analytic' needs the denoiser's mmse_t (fit_mmse)")
        mm = mmse if self.variance == "analytic" else None
        dims = x0[0].numel()
        prior = D.prior_kl(sched, x0.double()).flatten(1).sum(1)
        cons = torch.zeros(B, T + 1, dtype=torch.float64, device=x0.device)
        if self.method == "exact":
            # several t per network call: the batch is x0 repeated for a chunk of t values
            chunk = max(1, self.max_batch // B)
            for lo in range(2, T + 1, chunk):
                ts = torch.arange(lo, min(lo + chunk, T + 1), device=x0.device)
                t = ts.repeat_interleave(B)
                xr = x0.repeat(ts.numel(), *([1] * (x0.dim() - 1)))
                yr = None if y is None else y.repeat(ts.numel())
                term = consistency_term(denoiser, xr, t, _randn(xr.shape, x0, generator),
                                        self.variance, mm, yr)
                cons[:, lo:lo + ts.numel()] = term.reshape(ts.numel(), B).T
        elif T >= 2:
            edges = torch.linspace(2, T + 1, min(self.strata, T - 1) + 1).round().long().tolist()
            rows = torch.arange(B, device=x0.device)
            q = stratum_proposal(denoiser, self.variance, self.proposal, mm)
            for lo, hi in zip(edges[:-1], edges[1:]):
                p = q[lo:hi] / q[lo:hi].sum()
                for _ in range(self.per_stratum):
                    k = torch.multinomial(p, B, replacement=True, generator=_cpu(generator))
                    t = (lo + k).to(x0.device)
                    term = consistency_term(denoiser, x0, t, _randn(x0.shape, x0, generator),
                                            self.variance, mm, y)
                    # unbiased: E_q[L_t / q(t)] = sum_t L_t over the stratum
                    cons[rows, t] += term / (p[k].to(term.device) * self.per_stratum)
        t1 = torch.ones(B, dtype=torch.int64, device=x0.device)
        x1 = D.q_sample(sched, x0, t1, _randn(x0.shape, x0, generator))
        dec = decoder_nll(denoiser, x0, x1, self.decoder, mm, y).double()
        return ELBOTerms(prior=prior, consistency_by_t=cons, decoder=dec, dims=dims)

    def evaluate(self, denoiser: Denoiser, data: torch.Tensor, *, seed: int = 0,
                 mmse: torch.Tensor | None = None, dist: Any = None, progress: bool = False,
                 labels: torch.Tensor | None = None) -> NLLResult:
        """Mean -ELBO of ``data`` (N, ...) in bits/dim, reproducible from ``seed``; with
        ``labels`` (N,) of a class-conditional denoiser, of -log p(x_0 | y) (guidance 0).

        One generator (seeded with ``seed``) runs through the batches in order. Under torchrun
        (``dist``: a :class:`ddpmkit.distributed.Dist`) batch i is *owned* by rank i mod world:
        every rank makes every batch's random draws, but only the owner calls the network (the
        others run a network that returns zeros, which draws the same numbers), and the owned
        terms are gathered. So 1 and N ranks give the same result bit for bit, by construction.
        """
        if data.shape[0] == 0:
            raise InputError("no examples to evaluate: the data split is empty")
        if labels is not None and labels.shape != (data.shape[0],):
            raise InputError(f"{labels.numel()} labels for {data.shape[0]} examples")
        rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
        gen = torch.Generator(device=data.device).manual_seed(seed)
        skip = _without_network(denoiser) if world > 1 else None
        N, B = data.shape[0], self.batch_size
        n_batches = (N + B - 1) // B
        rows, by_t = [], []
        todo = range(n_batches)
        if progress and rank == 0:
            todo = progress_bar(todo, desc=f"-ELBO ({self.method})", unit="batch")
        for i in todo:
            x0 = data[i * B:(i + 1) * B]
            y = None if labels is None else labels[i * B:(i + 1) * B].to(data.device)
            if i % world != rank:
                self.terms(skip, x0, generator=gen, mmse=mmse)  # the draws only
                continue
            terms = self.terms(denoiser, x0, generator=gen, mmse=mmse, y=y)
            rows.append(torch.stack([terms.total, terms.prior, terms.consistency,
                                     terms.decoder], 1))
            by_t.append(terms.consistency_by_t.sum(0)[None])
        T = denoiser.T
        local = torch.cat(rows) if rows else torch.zeros(0, 4, dtype=torch.float64,
                                                         device=data.device)
        local_t = torch.cat(by_t) if by_t else torch.zeros(0, T + 1, dtype=torch.float64,
                                                           device=data.device)
        if world > 1:
            local = _interleave(dist.all_gather_rows(local), N, B)
            local_t = _interleave(dist.all_gather_rows(local_t), n_batches, 1)
        tot, prior, cons, dec = (c.contiguous() for c in local.unbind(1))
        by_t_sum = None
        if self.method == "exact":  # the per-batch sums added in batch order
            by_t_sum = local_t[0]
            for row in local_t[1:]:
                by_t_sum = by_t_sum + row
        return summarize_nll(tot, prior, cons, dec, by_t_sum, dims=data[0].numel(),
                             calls=self.calls_per_example(T), method=self.method)


def _without_network(denoiser: Denoiser) -> Denoiser:
    """The same Denoiser (schedule, parameterization, so the same proposal and draws) with a
    network that returns zeros: it makes exactly the random draws the real one would."""
    return Denoiser(lambda x, t, y=None: torch.zeros_like(x), denoiser.schedule,
                    denoiser.parameterization, denoiser.sigma_data)


def _interleave(parts: list[torch.Tensor], n: int, chunk: int) -> torch.Tensor:
    """Rank r holds chunks r, r + world, ... (rows); put them back in chunk order."""
    world = len(parts)
    pieces, cursors = [], [0] * world
    for i in range((n + chunk - 1) // chunk):
        r = i % world
        size = min(chunk, n - i * chunk)
        pieces.append(parts[r][cursors[r]:cursors[r] + size])
        cursors[r] += size
    return torch.cat(pieces)


def elbo_terms(denoiser: Denoiser, x0: torch.Tensor, *, generator: torch.Generator | None = None,
               mmse: torch.Tensor | None = None, **settings: Any) -> ELBOTerms:
    """:meth:`ELBOEstimator.terms` with the estimator's settings as keywords."""
    return ELBOEstimator(**settings).terms(denoiser, x0, generator=generator, mmse=mmse)


def negative_elbo_bpd(denoiser: Denoiser, data: torch.Tensor, *, seed: int = 0,
                      mmse: torch.Tensor | None = None, progress: bool = False,
                      dist: Any = None, labels: torch.Tensor | None = None,
                      **settings: Any) -> NLLResult:
    """:meth:`ELBOEstimator.evaluate` with the estimator's settings as keywords."""
    return ELBOEstimator(**settings).evaluate(denoiser, data, seed=seed, mmse=mmse, dist=dist,
                                              progress=progress, labels=labels)


def summarize_nll(total: torch.Tensor, prior: torch.Tensor, consistency: torch.Tensor,
                  decoder: torch.Tensor, by_t_sum: torch.Tensor | None, *, dims: int,
                  calls: int, method: str) -> NLLResult:
    """Per-example -ELBO terms in nats (each (N,)) -> the dataset's NLLResult in bits/dim.

    ``by_t_sum``: the sum over examples of L_t, (T+1,), or None (not reported)."""
    n = total.numel()
    scale = 1.0 / (dims * math.log(2.0))
    se = float(total.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    return NLLResult(
        bpd=float(total.mean()) * scale, se_bpd=se * scale, n=n, dims=dims, method=method,
        network_calls_per_example=calls,
        terms_bpd={"prior": float(prior.mean()) * scale,
                   "consistency": float(consistency.mean()) * scale,
                   "decoder": float(decoder.mean()) * scale},
        by_t_bpd=None if by_t_sum is None else (by_t_sum / n * scale).tolist(),
    )


@torch.no_grad()
def fit_mmse(denoiser: Denoiser, data: torch.Tensor, *, knots: int = 100, n: int = 256,
             batch_size: int = 4096, seed: int = 0, progress: bool = False,
             labels: torch.Tensor | None = None) -> torch.Tensor:
    """mmse_t = E||x0_hat(x_t, t) - x_0||^2 / D, the denoiser's own error, float64 (T+1,).

    Measured on ``n`` examples of ``data`` (use the training split: the variance is then a
    property of the model, not of the test set) at ``knots`` values of t spread evenly in
    log-SNR (always t = 1 and t = T), and interpolated linearly in (log-SNR, log mmse) in
    between; t = 1 and the knots themselves are measured, not interpolated. Index 0 is 0.
    The x_t draws come from a generator seeded with ``seed``. ``labels`` (N,): the error of a
    class-conditional denoiser given the true classes.
    """
    from .schedules import spaced_timesteps

    if data.shape[0] == 0:
        raise InputError("fit_mmse needs data: the split is empty")
    T = denoiser.T
    gen = torch.Generator(device=data.device).manual_seed(seed)
    idx = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    x0 = data[idx.to(data.device)]
    y0 = None if labels is None else labels[idx].to(data.device)
    ks = sorted(set([1] + spaced_timesteps(denoiser.schedule, min(knots, T), "logsnr")))
    per = max(1, batch_size // x0.shape[0])
    vals = []
    it = range(0, len(ks), per)
    if progress:
        it = progress_bar(it, desc="mmse_t", unit="call")
    for lo in it:
        ts = torch.tensor(ks[lo:lo + per], device=data.device)
        t = ts.repeat_interleave(x0.shape[0])
        xr = x0.repeat(ts.numel(), *([1] * (x0.dim() - 1)))
        yr = None if y0 is None else y0.repeat(ts.numel())
        x_t = D.q_sample(denoiser.schedule, xr, t, _randn(xr.shape, xr, gen))
        err = ((denoiser.x0_hat(x_t, t, yr) - xr) ** 2).flatten(1).mean(1).double()
        vals.append(err.reshape(ts.numel(), -1).mean(1).cpu())
    at = torch.cat(vals).clamp(min=1e-30)
    lam = denoiser.schedule.log_snr
    out = torch.zeros(T + 1, dtype=torch.float64)
    kt = torch.tensor(ks)
    out[kt] = at
    lam_k, log_k = lam[kt], torch.log(at)
    for j in range(len(ks) - 1):  # log mmse linear in log-SNR between neighbouring knots
        a, b = ks[j], ks[j + 1]
        if b - a > 1:
            f = (lam[a + 1:b] - lam_k[j]) / (lam_k[j + 1] - lam_k[j])
            out[a + 1:b] = torch.exp(log_k[j] + f * (log_k[j + 1] - log_k[j]))
    return out
