"""Evaluation of a trained run: bits/dim on a split, and sample quality (FD or sliced W2).

Every result records what it depends on: checkpoint path and hash, EMA or not, split, method,
sampler, steps, clipping, n and seed, so that a number can be reproduced from its JSON.

Under torchrun, pass the job's :class:`ddpmkit.distributed.Dist`: the work is split over the
ranks and gathered, and the numbers are those of one process with the same settings (see
:func:`eval_bpd` and :func:`eval_samples`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

import torch

from .data import Dataset, load_dataset
from .distributed import Dist, generate_sharded
from .errors import InputError
from .likelihood import DecoderSpec, ELBOEstimator, fit_mmse
from .train.load import Loaded


def run_dataset(loaded: Loaded) -> Dataset:
    cfg = loaded.run.config
    return load_dataset(cfg.data, image_size=cfg.image_size, seed=cfg.seed)


def provenance(loaded: Loaded) -> dict[str, Any]:
    return {"checkpoint": str(loaded.checkpoint), "step": loaded.step, "ema": loaded.ema,
            "model_sha256": loaded.model_sha256, "data": loaded.run.config.data}


def data_estimator(estimator: ELBOEstimator, data: Dataset) -> ELBOEstimator:
    """The estimator with its decoder set for this data: K levels from the data, or the
    continuous Gaussian decoder for data with no levels."""
    dec = estimator.decoder
    if data.levels:
        kind = "discrete" if dec.kind == "gaussian" else dec.kind
        dec = DecoderSpec(kind=kind, levels=data.levels, variance=dec.variance)
    elif dec.kind == "levels":
        raise InputError(f"the K-level decoder needs data on levels; {data.name} is "
                         "continuous (use --decoder gaussian)")
    else:
        dec = DecoderSpec(kind="gaussian", variance=dec.variance)
    return estimator.replace(decoder=dec)


MMSE_PREFIX = "mmse"


def run_mmse(loaded: Loaded, data: Dataset, *, device: str = "cpu", save: bool = True,
             progress: bool = False, seed: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """The denoiser's mmse_t on the training split (:func:`ddpmkit.likelihood.fit_mmse`),
    cached in RUN_DIR/eval/mmse/ and reused when the model hash matches."""
    import json

    from .io import atomic_write_json

    name = f"{MMSE_PREFIX}_step{loaded.step:07d}_{'ema' if loaded.ema else 'raw'}_seed{seed}.json"
    path = Path(loaded.run_dir) / EVAL_DIR / MMSE_PREFIX / name
    if path.is_file():
        try:
            rec = json.loads(path.read_text())
            if rec.get("model_sha256") == loaded.model_sha256 and \
                    len(rec.get("mmse", [])) == loaded.denoiser.T + 1:
                return torch.tensor(rec["mmse"], dtype=torch.float64), rec
        except (OSError, ValueError):
            pass  # recompute
    t0 = time.perf_counter()
    labels = data.train_labels if loaded.run.config.conditional else None
    mmse = fit_mmse(loaded.denoiser, data.train.to(device), seed=seed, progress=progress,
                    labels=labels).cpu()
    rec = {"mmse": mmse.tolist(), "split": "train", "seed": seed, "knots": 100, "n": 256,
           "seconds": time.perf_counter() - t0, **provenance(loaded)}
    if save and os.access(loaded.run_dir, os.W_OK):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, rec)
    return mmse, rec


def eval_bpd(loaded: Loaded, *, split: Literal["test", "train"] = "test",
             estimator: ELBOEstimator | None = None, seed: int = 0, device: str = "cpu",
             progress: bool = False, dataset: Dataset | None = None, limit: int | None = None,
             dist: Dist | None = None, save_mmse: bool = True,
             condition: bool | None = None, **settings: Any) -> dict[str, Any]:
    """-ELBO in bits/dim on a split, with its terms, the rate/distortion split and its cost.

    ``estimator``: every setting (:class:`ddpmkit.likelihood.ELBOEstimator`, its defaults if
    None); keyword ``settings`` (``method="stratified"``, ``strata=20``, ...) replace fields of
    it. The decoder's levels come from the data. The analytic variance measures the
    denoiser's mmse_t on the training split first (cached in RUN_DIR/eval, see
    :func:`run_mmse`). ``dist`` (torchrun): the batches are shared out by ownership and the
    numbers are those of one process, bit for bit on the same hardware. The result records
    the estimator whole under ``"estimator"``. A class-conditional run is evaluated given the
    split's true labels, -log p(x_0 | y) with guidance 0 (``condition=False``: with the null
    class, -log p(x_0) of the same net); the result says which under ``"conditional"``."""
    data = dataset or run_dataset(loaded)
    x = data.test if split == "test" else data.train
    if x is None:
        raise InputError(f"{data.name} has no {split} split; use --split train")
    y = None
    condition = loaded.run.config.conditional if condition is None else condition
    if condition:
        if not loaded.run.config.conditional:
            raise InputError("this run is unconditional: it has no -log p(x | y) to evaluate")
        y = data.test_labels if split == "test" else data.train_labels
        if y is None:
            raise InputError(f"{data.name}'s {split} split has no labels for -log p(x | y)")
    if limit is not None:
        x = x[:limit]
        y = None if y is None else y[:limit]
    est = data_estimator((estimator or ELBOEstimator()).replace(**settings), data)
    mmse, mmse_rec = None, None
    if est.variance == "analytic":
        mmse, mmse_rec = run_mmse(loaded, data, device=device, progress=progress,
                                  save=save_mmse and (dist is None or dist.is_main))
    t0 = time.perf_counter()
    res = est.evaluate(loaded.denoiser, x.to(device), seed=seed, mmse=mmse, dist=dist,
                       progress=progress, labels=y)
    seconds = time.perf_counter() - t0
    out = res.as_dict()
    if res.by_t_bpd is not None:
        out["consistency_by_bucket"] = bucket_bpd(res.by_t_bpd)
    dec = est.decoder
    return {**out, "split": split, "seed": seed, "seconds": seconds, "limit": limit,
            "estimator": est.as_dict(), "variance": est.variance,
            "batch_size": est.batch_size, "max_batch": est.max_batch,
            "decoder": {"kind": dec.kind, "levels": dec.levels,
                        "variance": (None if dec.kind == "levels" else
                                     dec.resolved_variance(loaded.denoiser, mmse))},
            "strata": est.strata if est.method == "stratified" else None,
            "per_stratum": est.per_stratum if est.method == "stratified" else None,
            "proposal": est.proposal if est.method == "stratified" else None,
            "mmse_seconds": mmse_rec["seconds"] if mmse_rec else None,
            "conditional": bool(condition),
            "run_conditional": bool(loaded.run.config.conditional),
            **provenance(loaded)}


#: samples per chunk of eval_samples (chunk i is drawn from the seed (seed, i))
DEFAULT_SAMPLE_CHUNK = 512


def eval_samples(loaded: Loaded, *, n: int = 1797, sampler: str = "dpmpp2m",
                 steps: int | None = 20, clip: str | None = None, seed: int = 0,
                 device: str = "cpu", progress: bool = False, chunk: int = DEFAULT_SAMPLE_CHUNK,
                 dataset: Dataset | None = None, samples: torch.Tensor | None = None,
                 dist: Dist | None = None) -> tuple[dict[str, Any], torch.Tensor]:
    """Sample n and score them: digits -> FD (and its real-data floor); vectors -> sliced W2.

    ``dist`` (torchrun): chunk i of ``chunk`` samples (seeded with (seed, i)) is drawn by rank
    i mod world and the chunks are gathered in order, so the samples, and the score, are those
    of one process, bit for bit on the same hardware. Every rank returns all the samples; only
    rank 0 scores them (the other ranks' result holds the settings without the score)."""
    dist = dist or Dist()
    kind = loaded.run.data["kind"]
    clip = clip or ("clip" if kind == "image" else "none")
    t0 = time.perf_counter()
    drawn = samples is None
    if drawn:
        samples, meta = generate_sharded(loaded.denoiser, loaded.run.data["shape"], n, dist,
                                         sampler=sampler, steps=steps, clip=clip, seed=seed,
                                         chunk=chunk, device=device, progress=progress)
    else:
        meta = {"network_calls": None}
    sample_s = time.perf_counter() - t0
    out: dict[str, Any] = {"n": n, "sampler": sampler, "steps": steps, "clip": clip,
                           "seed": seed, "chunk": chunk if drawn else None,
                           "network_calls": meta.get("network_calls"),
                           "sample_seconds": sample_s, **provenance(loaded)}
    if not dist.is_main:
        return out, samples
    if loaded.run.config.data == "digits":
        import numpy as np

        from .metrics.fd import FD_MIN_N, classify_digits, digits_fd_floor, frechet_distance

        out["fd"] = frechet_distance(samples)
        out["fd_floor"] = digits_fd_floor()
        out["fd_ratio"] = out["fd"] / out["fd_floor"]
        out["fd_reference"] = "digits train split (1347 images)"
        out["class_counts"] = np.bincount(np.asarray(classify_digits(samples)),
                                          minlength=10).tolist()
        out["fd_comparable"] = n >= FD_MIN_N
    elif kind == "vector":
        from .metrics.sliced_w2 import sliced_w2

        data = dataset or run_dataset(loaded)
        ref = data.test if data.test is not None else data.train
        out["sliced_w2"] = sliced_w2(samples, ref, seed=seed)
        half = ref.shape[0] // 2
        out["sliced_w2_floor"] = sliced_w2(ref[:half], ref[half:2 * half], seed=seed)
    else:
        out["note"] = "no sample-quality metric for this data (FD is defined for digits only)"
    return out, samples


# --- stored results, breakdowns and the exact-vs-stratified comparison -----------------------

EVAL_DIR = "eval"


def bucket_bpd(by_t_bpd: list[float], buckets: int = 10) -> list[dict[str, Any]]:
    """Sum of the consistency terms L_t (bits/dim) over ``buckets`` contiguous t-ranges of 2..T.

    by_t_bpd: length T+1, column t holds the mean L_t (0 at t = 0, 1). Returns one record per
    bucket: {"t_lo", "t_hi" (inclusive), "bpd" = sum_{t_lo <= t <= t_hi} L_t}.
    """
    T = len(by_t_bpd) - 1
    if T < 2:
        return []
    edges = torch.linspace(2, T + 1, min(buckets, T - 1) + 1).round().long().tolist()
    return [{"t_lo": lo, "t_hi": hi - 1, "bpd": float(sum(by_t_bpd[lo:hi]))}
            for lo, hi in zip(edges[:-1], edges[1:])]


def cost_per_unit_variance(result: dict[str, Any]) -> dict[str, float]:
    """What one unit of squared standard error costs: calls (or seconds) x n x se^2.

    The SE of a mean over n examples is sigma / sqrt(n), so reaching a target SE s needs
    n = sigma^2 / s^2 examples, i.e. a cost per example x sigma^2 / s^2. Two methods compared
    at equal SE thus cost in the ratio of (cost per example) x sigma^2 = (total cost) x se^2.
    """
    se2 = float(result["se_bpd"]) ** 2
    n = int(result["n"])
    return {"calls": float(result["network_calls_per_example"]) * n * se2,
            "seconds": float(result["seconds"]) * se2}


def compare_bpd(exact: dict[str, Any], stratified: dict[str, Any]) -> dict[str, Any]:
    """Exact vs stratified on the same checkpoint: agreement in SEs and the cost at equal SE.

    ``z`` = |bpd_stratified - bpd_exact| / se_stratified (the acceptance asks z <= 3);
    ``calls_ratio_equal_se`` = (T · n · se_exact^2) / ((strata·per_stratum + 1) · n · se_strat^2):
    how many times more network calls the exact method needs for the same standard error;
    ``seconds_ratio_equal_se`` the same with measured wall-clock seconds.
    """
    for name, r in (("exact", exact), ("stratified", stratified)):
        if r.get("method") != name:
            raise InputError(f"compare_bpd needs an {name} result; got method {r.get('method')!r}")
    if exact.get("model_sha256") != stratified.get("model_sha256"):
        raise InputError("the exact and stratified results come from different checkpoints; "
                         "evaluate the same checkpoint with both methods")
    ce, cs = cost_per_unit_variance(exact), cost_per_unit_variance(stratified)
    diff = float(stratified["bpd"]) - float(exact["bpd"])
    se_s = float(stratified["se_bpd"])
    return {
        "bpd_exact": exact["bpd"], "se_exact": exact["se_bpd"],
        "bpd_stratified": stratified["bpd"], "se_stratified": se_s,
        "diff_bpd": diff, "z": abs(diff) / se_s if se_s > 0 else float("inf"),
        "calls_per_example": {"exact": exact["network_calls_per_example"],
                              "stratified": stratified["network_calls_per_example"]},
        "seconds": {"exact": exact["seconds"], "stratified": stratified["seconds"]},
        "calls_ratio_equal_se": ce["calls"] / cs["calls"] if cs["calls"] > 0 else float("inf"),
        "seconds_ratio_equal_se": (ce["seconds"] / cs["seconds"] if cs["seconds"] > 0
                                   else float("inf")),
        "strata": stratified.get("strata"), "per_stratum": stratified.get("per_stratum"),
        "proposal": stratified.get("proposal"),
        "n": {"exact": exact["n"], "stratified": stratified["n"]},
    }


def eval_name(result: dict[str, Any]) -> str:
    """A file stem naming what a result depends on, e.g. ``bpd_exact_test_step0001000_ema``."""
    tail = f"step{int(result.get('step', 0)):07d}_{'ema' if result.get('ema') else 'raw'}"
    if "bpd" in result:
        lim = f"_n{result['n']}" if result.get("limit") is not None else ""
        strata = (f"_s{result['strata']}x{result['per_stratum']}_{result.get('proposal')}"
                  if result.get("method") == "stratified" else "")
        est = result.get("estimator") or {}
        var = f"_{est['variance']}" if est.get("variance", "small") != "small" else ""
        kind = (est.get("decoder") or {}).get("kind", "discrete")
        dec = f"_dec-{kind}" if kind == "levels" else ""
        if result.get("conditional") is False and result.get("run_conditional"):
            dec += "_uncond"
        return (f"bpd_{result['method']}{strata}{var}{dec}_{result['split']}{lim}"
                f"_seed{result['seed']}_{tail}")
    steps = result.get("steps") or "all"
    chunk = result.get("chunk")
    # the samples depend on the chunk size; the default (512) keeps the shorter name
    ch = f"_c{chunk}" if chunk not in (None, DEFAULT_SAMPLE_CHUNK) else ""
    return (f"samples_{result['sampler']}_{steps}_{result['clip']}_n{result['n']}{ch}"
            f"_seed{result['seed']}_{tail}")


def save_eval(run_dir: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Write a result to RUN_DIR/eval/<eval_name>.json atomically; the report reads them."""
    from .io import atomic_write_json, finite_json

    d = Path(run_dir) / EVAL_DIR
    d.mkdir(exist_ok=True)
    path = d / f"{eval_name(result)}.json"
    atomic_write_json(path, finite_json(result))
    return path


def load_evals(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Every stored result of RUN_DIR/eval/*.json (unreadable files are skipped), oldest first."""
    d = Path(run_dir) / EVAL_DIR
    out = []
    for p in sorted(d.glob("*.json"), key=lambda p: p.stat().st_mtime) if d.is_dir() else []:
        try:
            r = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(r, dict):
            out.append(r | {"file": p.name})
    return out


