"""Checkpoints: safetensors + JSON, content-hashed, written atomically, never unpickled.

Layout (DESIGN.md contract)::

    RUN_DIR/config.json
    RUN_DIR/checkpoints/step_0001000/{model,ema,optim}.safetensors
    RUN_DIR/checkpoints/step_0001000/state.json   # step, RNG states, data position, hashes

A checkpoint is written into ``checkpoints/.tmp-step_XXXXXXX-PID`` and renamed into place only
when every file is written and synced, so a crash leaves either no checkpoint or a whole one.
``state.json`` holds the sha256 of each tensor file and of config.json; loading checks every
hash, the step and the tensor names/shapes before any weight is used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import InputError
from ..io import atomic_write_json, sha256_file

FORMAT = "ddpmkit-checkpoint/1"
TENSOR_FILES = ("model.safetensors", "ema.safetensors", "optim.safetensors")
STEP_DIR = re.compile(r"^step_(\d{7,})$")


def encode_tensor(t: torch.Tensor) -> str:
    """A uint8 RNG state as base64 text for state.json."""
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def decode_tensor(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """Flatten an optimizer's state into safetensors-ready tensors + JSON-able param groups."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if not isinstance(val, torch.Tensor):
                val = torch.tensor(val)
            tensors[f"state.{idx}.{key}"] = val
    return tensors, sd["param_groups"]


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                           param_groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, val in tensors.items():
        if not name.startswith("state."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = val
    opt.load_state_dict({"state": state, "param_groups": param_groups})


def save_checkpoint(run_dir: str | os.PathLike, step: int, *, model: dict[str, torch.Tensor],
                    ema: dict[str, torch.Tensor], optim: dict[str, torch.Tensor],
                    state: dict[str, Any], keep: int = 3) -> Path:
    """Write checkpoints/step_XXXXXXX atomically; keep the newest ``keep`` checkpoints."""
    run_dir = Path(run_dir)
    ckdir = run_dir / "checkpoints"
    ckdir.mkdir(parents=True, exist_ok=True)
    remove_partial(ckdir)
    final = ckdir / step_dir_name(step)
    tmp = ckdir / f".tmp-{step_dir_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        hashes = {}
        for name, sd in zip(TENSOR_FILES, (model, ema, optim)):
            save_file(_contiguous(sd), str(tmp / name))
            hashes[name] = sha256_file(tmp / name)
        cfg = run_dir / "config.json"
        full_state = {"format": FORMAT, "step": step, **state, "hashes": hashes,
                      "config_sha256": sha256_file(cfg) if cfg.exists() else None}
        full_state["state_sha256"] = _state_hash(full_state)
        atomic_write_json(tmp / "state.json", full_state)
        for name in TENSOR_FILES:
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        if final.exists():  # re-saving a step (e.g. after a resume): swap, then drop the old
            old = ckdir / f".old-{step_dir_name(step)}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(ckdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _state_hash(state: dict[str, Any]) -> str:
    """sha256 of state.json's content without this field (canonical JSON)."""
    body = {k: v for k, v in state.items() if k != "state_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def remove_partial(ckdir: Path) -> None:
    """Delete leftovers of interrupted writes (.tmp-* and .old-* folders): never valid."""
    for p in ckdir.glob(".tmp-step_*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in ckdir.glob(".old-step_*"):
        shutil.rmtree(p, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """step_* directories of a run, oldest first (temporary ones are ignored)."""
    ckdir = Path(run_dir) / "checkpoints"
    if not ckdir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckdir.iterdir()
             if p.is_dir() and (m := STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


@dataclass
class LoadedCheckpoint:
    path: Path
    step: int
    state: dict[str, Any]
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    optim: dict[str, torch.Tensor]


SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4,
                           "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_header(f: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """{name: (dtype, shape)} from a safetensors file's header, checked against the file's
    real size before anything is loaded: the header must fit, every tensor's byte range must lie
    inside the file and match its dtype x shape. InputError naming the problem otherwise."""
    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise InputError(f"{f} is too short to be a safetensors file")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, 100 * 1024 * 1024):
            raise InputError(f"{f}: its header claims {n} bytes, more than the file holds")
        try:
            meta = json.loads(fh.read(n))
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{f}: the safetensors header is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{f}: the safetensors header is not a JSON object")
    data = size - 8 - n
    out = {}
    for name, info in meta.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape = info["dtype"], tuple(int(d) for d in info["shape"])
            lo, hi = (int(v) for v in info["data_offsets"])
            width = SAFETENSORS_DTYPE_BYTES[dtype]
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{f}: tensor {name!r} has a malformed header entry") from None
        count = 1
        for d in shape:
            count *= d
        if min(shape, default=0) < 0 or not 0 <= lo <= hi <= data or hi - lo != count * width:
            raise InputError(f"{f}: tensor {name!r} claims shape {shape} ({dtype}) at bytes "
                             f"{lo}..{hi} of {data}; the file is truncated or forged")
        out[name] = (dtype, shape)
    return out


def check_header_against(header: dict[str, tuple[str, tuple[int, ...]]],
                         expected: dict[str, tuple[int, ...]], what: str) -> None:
    """The tensor names and shapes a header claims must be the network's, before loading."""
    check_names_and_shapes({k: v[1] for k, v in header.items()}, expected, what)


def check_names_and_shapes(have: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]],
                           what: str) -> None:
    """``have`` must name exactly ``want``'s tensors with its shapes; else one InputError."""
    missing = sorted(set(want) - set(have))
    extra = sorted(set(have) - set(want))
    if missing or extra:
        raise InputError(f"{what} does not fit this run's network: missing {missing[:3]}, "
                         f"unexpected {extra[:3]} (another architecture, or a forged file?)")
    for k, shape in want.items():
        if tuple(have[k]) != tuple(shape):
            raise InputError(f"{what} does not fit this run's network: {k} has shape "
                             f"{tuple(have[k])}, expected {tuple(shape)}")


def verify_checkpoint(path: str | os.PathLike, run_dir: str | os.PathLike | None = None,
                      load_optim: bool = True,
                      expected: dict[str, tuple[int, ...]] | None = None) -> LoadedCheckpoint:
    """Load a checkpoint after checking it; InputError naming the first problem found.

    Checks: state.json parses and has this format; its step matches the folder name; every
    tensor file exists and has the recorded sha256; its safetensors header is consistent with
    the file's size and, given ``expected`` ({name: shape} of the run's network), names those
    tensors with those shapes (model and EMA), all before the tensors are read; and, when
    run_dir is given, config.json has the hash recorded at save time.
    """
    path = Path(path)
    where = f"checkpoint {path}"
    sj = path / "state.json"
    if not sj.is_file():
        raise InputError(f"{where}: state.json is missing (not a checkpoint, or a partial one)")
    try:
        state = json.loads(sj.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{where}: state.json is not valid JSON ({e})") from None
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt != FORMAT:
        raise InputError(f"{where}: unknown format {fmt!r}; expected {FORMAT}")
    if "state_sha256" not in state:
        raise InputError(f"{where}: state.json has no content hash (written before ddpmkit "
                         "0.1.0's checkpoint format was final); retrain or resume from a newer one")
    if state.get("state_sha256") != _state_hash(state):
        raise InputError(f"{where}: state.json was modified after it was written (its content "
                         "hash does not match)")
    m = STEP_DIR.match(path.name)
    step = state.get("step")
    if m and (not isinstance(step, int) or int(m.group(1)) != step):
        raise InputError(f"{where}: state.json says step {step!r} but the folder is step "
                         f"{int(m.group(1))}; the checkpoint is inconsistent")
    if run_dir is not None and state.get("config_sha256"):
        cfg = Path(run_dir) / "config.json"
        if cfg.is_file() and sha256_file(cfg) != state["config_sha256"]:
            raise InputError(f"{where}: config.json changed since this checkpoint was written; "
                             "restore it or start a new run directory")
    hashes = state.get("hashes") or {}
    names = [n for n in TENSOR_FILES if load_optim or n != "optim.safetensors"]
    for name in names:  # every file checked, headers included, before any tensor is read
        f = path / name
        if not f.is_file():
            raise InputError(f"{where}: {name} is missing")
        if hashes.get(name) != sha256_file(f):
            raise InputError(f"{where}: {name} does not match its recorded sha256 "
                             "(truncated or corrupted file)")
        header = safetensors_header(f)
        if expected is not None and name != "optim.safetensors":
            check_header_against(header, expected, f"{where}: {name}")
    tensors = {}
    for name in names:
        try:
            tensors[name] = load_file(str(path / name))
        except (SafetensorError, OSError, ValueError) as e:
            raise InputError(f"{where}: {name} is not a readable safetensors file ({e})") from None
    return LoadedCheckpoint(path=path, step=int(step), state=state,
                            model=tensors["model.safetensors"], ema=tensors["ema.safetensors"],
                            optim=tensors.get("optim.safetensors", {}))


def newest_valid_checkpoint(run_dir: str | os.PathLike, load_optim: bool = True,
                            expected: dict[str, tuple[int, ...]] | None = None,
                            ) -> tuple[LoadedCheckpoint | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies, and the (path, reason) of each newer one skipped."""
    skipped: list[tuple[Path, str]] = []
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return verify_checkpoint(path, run_dir, load_optim=load_optim,
                                     expected=expected), skipped
        except InputError as e:
            skipped.append((path, str(e)))
    return None, skipped


def check_state_dict(module: torch.nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """Names and shapes of ``sd`` must equal the module's, its floats finite; else InputError."""
    own = module.state_dict()
    check_names_and_shapes({k: tuple(v.shape) for k, v in sd.items()},
                           {k: tuple(v.shape) for k, v in own.items()}, what)
    for k in own:
        if not torch.isfinite(sd[k]).all() if sd[k].is_floating_point() else False:
            raise InputError(f"{what}: tensor {k} holds NaN or Inf")
