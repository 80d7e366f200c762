"""Load a trained denoiser from a run directory or one of its checkpoints (no pickle)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..denoiser import Denoiser
from ..errors import InputError
from .checkpoint import STEP_DIR, check_state_dict, newest_valid_checkpoint, verify_checkpoint
from .run import Run, read_run


@dataclass
class Loaded:
    """A denoiser ready to sample, and where it came from."""

    denoiser: Denoiser
    run: Run
    run_dir: Path
    checkpoint: Path
    step: int
    ema: bool
    model_sha256: str


def resolve_checkpoint(path: str | os.PathLike) -> tuple[Path, Path | None]:
    """(run_dir, checkpoint dir or None for "newest valid") from a run dir or a checkpoint."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist; give a run directory or a checkpoint folder")
    if (path / "state.json").is_file() or STEP_DIR.match(path.name):
        return path.parent.parent, path
    if (path / "config.json").is_file():
        return path, None
    raise InputError(f"{path} is neither a run directory (config.json) nor a checkpoint "
                     "(state.json)")


def load_denoiser(path: str | os.PathLike, *, ema: bool = True, device: str = "cpu",
                  verbose: bool = True) -> Loaded:
    """The (EMA) denoiser of a run's newest valid checkpoint, or of the given checkpoint."""
    run_dir, ck_dir = resolve_checkpoint(path)
    run = read_run(run_dir)
    den = run.build_denoiser()
    # the safetensors headers must name the run's tensors with their shapes before any is read
    expected = {k: tuple(v.shape) for k, v in den.net.state_dict().items()}
    if ck_dir is None:
        ck, skipped = newest_valid_checkpoint(run_dir, load_optim=False, expected=expected)
        for p, why in skipped:
            if verbose:
                print(f"ddpmkit: skipping checkpoint {p.name}: {why}", flush=True)
        if ck is None and skipped:
            raise InputError(f"{run_dir} has no valid checkpoint; the newest was skipped: "
                             f"{skipped[0][1]}")
        if ck is None:
            raise InputError(f"{run_dir} has no checkpoint yet; train it longer or resume")
    else:
        ck = verify_checkpoint(ck_dir, run_dir, load_optim=False, expected=expected)
    sd = ck.ema if ema else ck.model
    name = "ema.safetensors" if ema else "model.safetensors"
    check_state_dict(den.net, sd, f"{ck.path.name}/{name}")
    den.net.load_state_dict(sd)
    den = den.to(device).eval()
    return Loaded(den, run, run_dir, ck.path, ck.step, ema, ck.state["hashes"][name])
