"""What the report shows, read from the run directory: config.json, log.jsonl, metrics.json
(``ddpmkit demo``), eval/*.json (``ddpmkit eval``) and the pictures; those the run lacks are
drawn from its newest checkpoint (a 64-sample grid and an x_t / x0_hat trajectory)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..evaluate import load_evals
from ..figures import Preview, preview
from ..train import Run, load_denoiser, read_log, read_run


@dataclass
class Collected:
    """Everything the page needs, read (or drawn) once."""

    run_dir: Path
    run: Run
    records: list[dict[str, Any]]  # log.jsonl
    metrics: dict[str, Any] | None  # metrics.json of the demo
    evals: list[dict[str, Any]]  # eval/*.json
    samples_png: bytes | None
    sample_note: str  # where the samples come from
    trajectory_png: bytes | None


def collect(run_dir: Path, *, device: str = "cpu", draw: bool = True,
            seed: int = 0) -> Collected:
    """Read the run; ``draw``: sample from the newest checkpoint for the pictures the run does
    not have (samples.png, trajectory.png)."""
    if not (run_dir / "config.json").is_file():
        raise InputError(f"{run_dir} is not a run directory (no config.json); give the folder "
                         "that 'ddpmkit train' or 'ddpmkit demo' wrote")
    run = read_run(run_dir)
    records = read_log(run_dir)
    metrics = _read_json(run_dir / "metrics.json")
    evals = load_evals(run_dir)
    samples, note, traj = _pictures(run_dir, run.data["kind"], device, draw, seed)
    return Collected(run_dir, run, records, metrics, evals, samples, note, traj)


def _pictures(run_dir: Path, kind: str, device: str, draw: bool, seed: int,
              ) -> tuple[bytes | None, str, bytes | None]:
    """(samples PNG, where they come from, trajectory PNG): the demo's pictures, else drawn
    from the checkpoint, else the newest sample grid of training (samples/step_*.png)."""
    samples = _read_bytes(run_dir / "samples.png")
    traj = _read_bytes(run_dir / "trajectory.png")
    note = "from the demo (samples.png)" if samples else ""
    ckdir = run_dir / "checkpoints"
    has_ckpt = any(ckdir.glob("step_*")) if ckdir.is_dir() else False
    if draw and has_ckpt and (samples is None or (traj is None and kind == "image")):
        drawn, drawn_note = draw_from_checkpoint(run_dir, device=device, seed=seed)
        if samples is None:
            samples, note = drawn.samples, drawn_note
        traj = traj or drawn.trajectory
    if samples is None:
        grids = list((run_dir / "samples").glob("step_*.png")) \
            if (run_dir / "samples").is_dir() else []
        if grids:
            newest = max(grids, key=lambda p: p.name)
            samples, note = newest.read_bytes(), f"from training: samples/{newest.name}"
    return samples, note, traj


def draw_from_checkpoint(run_dir: Path, device: str = "cpu", seed: int = 0,
                         ) -> tuple[Preview, str]:
    """The preview of the newest checkpoint's EMA weights (64 images with the trajectory of 6,
    or 2000 vectors; 100 ancestral steps at most), and a note saying so."""
    import torch

    loaded = load_denoiser(run_dir, device=device, verbose=False)
    kind = loaded.run.data["kind"]
    steps = min(loaded.denoiser.T, 100)
    den, n, what = loaded.denoiser, 64 if kind == "image" else 2000, ""
    k = int(loaded.run.data.get("num_classes", 0) or 0)
    if k:  # a class-conditional run: a per-class grid, one class per row (guidance 0)
        per = 10 if k <= 16 else 4
        den = den.conditioned(torch.arange(k).repeat_interleave(per))
        n, what = per * k, f"{per} of each of its {k} classes, one class per row, guidance 0; "
    pic = preview(den, kind, loaded.run.data["shape"], n=n, steps=steps, seed=seed,
                  device=device, trajectory=kind == "image", n_show=6)
    note = (f"drawn now: {what}ancestral sampling, {steps} steps, seed {seed}, EMA weights of "
            f"step {loaded.step}")
    return pic, note


def _read_bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None
