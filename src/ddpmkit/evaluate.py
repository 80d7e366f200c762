"""Evaluation of a trained run: bits/dim on a split, and sample quality (FD or sliced W2).

Every result records what it depends on: checkpoint path and hash, EMA or not, split, method,
sampler, steps, clipping, n and seed, so that a number can be reproduced from its JSON.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import torch

from .data import Dataset, load_dataset
from .errors import InputError
from .generate import generate
from .likelihood import DecoderSpec, negative_elbo_bpd
from .train.load import Loaded


def run_dataset(loaded: Loaded) -> Dataset:
    cfg = loaded.run.config
    return load_dataset(cfg.data, image_size=cfg.image_size, seed=cfg.seed)


def provenance(loaded: Loaded) -> dict[str, Any]:
    return {"checkpoint": str(loaded.checkpoint), "step": loaded.step, "ema": loaded.ema,
            "model_sha256": loaded.model_sha256, "data": loaded.run.config.data}


def eval_bpd(loaded: Loaded, *, split: Literal["test", "train"] = "test",
             method: Literal["exact", "stratified"] = "exact", strata: int = 50,
             per_stratum: int = 1, seed: int = 0, batch_size: int = 128, max_batch: int = 4096,
             device: str = "cpu", progress: bool = False, dataset: Dataset | None = None,
             limit: int | None = None) -> dict[str, Any]:
    """-ELBO in bits/dim on a split, with its terms, the rate/distortion split and its cost."""
    data = dataset or run_dataset(loaded)
    x = data.test if split == "test" else data.train
    if x is None:
        raise InputError(f"{data.name} has no {split} split; use --split train")
    if limit is not None:
        x = x[:limit]
    decoder = (DecoderSpec(kind="discrete", levels=data.levels) if data.levels
               else DecoderSpec(kind="gaussian"))
    t0 = time.perf_counter()
    res = negative_elbo_bpd(loaded.denoiser, x.to(device), method=method, decoder=decoder,
                            batch_size=batch_size, strata=strata, per_stratum=per_stratum,
                            max_batch=max_batch, seed=seed, progress=progress)
    seconds = time.perf_counter() - t0
    out = res.as_dict()
    return {**out, "split": split, "seed": seed, "seconds": seconds,
            "decoder": {"kind": decoder.kind, "levels": decoder.levels,
                        "variance": decoder.resolved_variance(loaded.denoiser)},
            "strata": strata if method == "stratified" else None,
            "per_stratum": per_stratum if method == "stratified" else None,
            **provenance(loaded)}


def eval_samples(loaded: Loaded, *, n: int = 1797, sampler: str = "dpmpp2m",
                 steps: int | None = 20, clip: str | None = None, seed: int = 0,
                 device: str = "cpu", progress: bool = False, chunk: int = 512,
                 dataset: Dataset | None = None, samples: torch.Tensor | None = None,
                 ) -> tuple[dict[str, Any], torch.Tensor]:
    """Sample n and score them: digits -> FD (and its real-data floor); vectors -> sliced W2."""
    kind = loaded.run.data["kind"]
    clip = clip or ("clip" if kind == "image" else "none")
    t0 = time.perf_counter()
    if samples is None:
        samples, meta = generate(loaded.denoiser, loaded.run.data["shape"], n, sampler=sampler,
                                 steps=steps, clip=clip, seed=seed, chunk=chunk, device=device,
                                 progress=progress)
    else:
        meta = {"network_calls": None}
    sample_s = time.perf_counter() - t0
    out: dict[str, Any] = {"n": n, "sampler": sampler, "steps": steps, "clip": clip,
                           "seed": seed, "network_calls": meta.get("network_calls"),
                           "sample_seconds": sample_s, **provenance(loaded)}
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
