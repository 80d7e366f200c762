"""The run directory: what it describes (config.json), creating and checking it, and log.jsonl.

Layout (DESIGN.md contract)::

    RUN_DIR/config.json     # {"format": "ddpmkit-run/1", "train": ..., "net": ..., "data": ...}
    RUN_DIR/log.jsonl       # one JSON record per logging window, written by rank 0
    RUN_DIR/checkpoints/    # see checkpoint.py
    RUN_DIR/samples/        # step_XXXXXXX.png preview grids

A run is never overwritten: an existing directory is refused unless resumed, and a resume must
use the settings in config.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import nets
from ..data import Dataset
from ..denoiser import Denoiser
from ..distributed import Dist
from ..errors import InputError
from ..io import atomic_write_bytes, atomic_write_json
from .config import TrainConfig, default_preset, parse_fourier

RUN_FORMAT = "ddpmkit-run/1"
LOG_NAME = "log.jsonl"


@dataclass
class Run:
    """What a run directory describes: the config, the net config and the data summary."""

    config: TrainConfig
    net_config: Any
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"format": RUN_FORMAT, "train": self.config.to_dict(),
                "net": nets.config_to_dict(self.net_config), "data": self.data}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Run:
        if not isinstance(d, dict) or d.get("format") != RUN_FORMAT:
            raise InputError(f"config.json is not a ddpmkit run config (format "
                             f"{d.get('format') if isinstance(d, dict) else None!r})")
        return cls(TrainConfig.from_dict(d["train"]), nets.config_from_dict(d["net"]), d["data"])

    def build_denoiser(self, net: torch.nn.Module | None = None) -> Denoiser:
        """The run's Denoiser around ``net`` (a fresh net of the run's config if None)."""
        net = nets.build_net(self.net_config) if net is None else net
        return Denoiser(net, self.config.noise_schedule(), **self.config.denoiser_kwargs())


def make_run(cfg: TrainConfig, data: Dataset) -> Run:
    """The net config for this data: the preset with the data's channels / dimension and T;
    the training config with its "auto" values resolved for this data."""
    cfg = cfg.resolve(data.levels, float(data.train.double().std()), image=data.kind == "image")
    preset = cfg.preset or default_preset(data.kind, data.data_shape)
    over = dict(cfg.net_overrides)
    if data.kind == "vector":
        if preset != "mlp2d":
            raise InputError(f"vector data needs the mlp2d preset, not {preset!r}")
        over.setdefault("dim", data.data_shape[0])
    else:
        if preset == "mlp2d":
            raise InputError("image data needs a U-Net preset (digits, mnist, cifar10)")
        over.setdefault("in_channels", data.data_shape[0])
        freqs = parse_fourier(cfg.fourier_features)
        if freqs:
            over.setdefault("fourier_frequencies", freqs)
    over["T"] = cfg.T
    summary = data.summary() | {"spec": cfg.data}
    if cfg.conditional:
        k = data.check_labels()
        over["num_classes"] = k
        summary |= {"num_classes": k,
                    "class_names": list(data.class_names or (str(i) for i in range(k)))}
    return Run(cfg, nets.preset(preset, **over), summary)


def read_run(run_dir: str | os.PathLike) -> Run:
    """The Run of RUN_DIR/config.json; InputError if there is none or it does not parse."""
    p = Path(run_dir) / "config.json"
    if not p.is_file():
        raise InputError(f"{run_dir} is not a run directory (no config.json); train one with "
                         "'ddpmkit train --out DIR'")
    try:
        return Run.from_json(json.loads(p.read_text()))
    except json.JSONDecodeError as e:
        raise InputError(f"{p} is not valid JSON ({e.msg})") from None


def prepare_run_dir(run_dir: Path, resume: bool, run: Run, dist: Dist) -> None:
    """Refuse to overwrite an existing run without --resume; write config.json on a new run.

    Every rank checks before any rank writes (so all fail alike); rank 0 writes."""
    check_run_dir(run_dir, resume, run)
    dist.barrier()
    if dist.is_main and not (resume and (run_dir / "config.json").is_file()):
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create run directory {run_dir}: {e.strerror}") from None
        if not os.access(run_dir, os.W_OK):
            raise InputError(f"run directory {run_dir} is not writable")
        atomic_write_json(run_dir / "config.json", run.to_json())
    dist.barrier()


def check_run_dir(run_dir: Path, resume: bool, run: Run) -> None:
    """InputError unless ``run`` may be written to (or, resumed, continues) ``run_dir``."""
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and any(p.name != ".lock" for p in run_dir.iterdir()) and not resume:
        raise InputError(f"run directory {run_dir} already exists; pass --resume to continue it "
                         "or choose another --out")
    if resume and cfg_path.is_file():
        stored = read_run(run_dir)
        if stored.to_json() != json.loads(json.dumps(run.to_json())):  # tuples -> lists
            diff = sorted(k for k, v in run.config.to_dict().items()
                          if stored.config.to_dict().get(k) != v)
            raise InputError(f"--resume with other settings than {cfg_path} "
                             f"({', '.join(diff) or 'net'}); resume with the same options "
                             "or start a new --out")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(f"--out {run_dir} exists and is not a directory")
    parent = run_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot create run directory {run_dir}: {parent} is not writable")


# --- log.jsonl ------------------------------------------------------------------------------

def _log_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """(line, parsed JSON) of each line of a log that parses (a torn last line from a kill
    does not)."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        try:
            yield line, json.loads(line)
        except ValueError:
            continue


def read_log(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of RUN_DIR/log.jsonl (a torn last line from a kill is skipped)."""
    return [rec for _, rec in _log_lines(Path(run_dir) / LOG_NAME)
            if isinstance(rec, dict) and "step" in rec]


def append_log(run_dir: Path, record: dict[str, Any]) -> None:
    with open(run_dir / LOG_NAME, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(run_dir: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint we resume from)."""
    path = run_dir / LOG_NAME
    if not path.is_file():
        return
    keep = [line for line, rec in _log_lines(path) if rec.get("step", 0) <= step]
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())
