"""The training loop: AdamW on the weighted x0-regression, EMA, checkpoints, exact resume.

Everything random is a function of the seed and the step, or saved in the checkpoint:
- the data order: epoch e is a permutation drawn from a generator seeded with (seed, e), and
  batch k takes positions k*B .. k*B + B - 1 of the concatenated epochs (no state to save);
- t and the noise: one generator for the whole global batch, its state saved in state.json;
- dropout: torch's global RNG, its state saved in state.json;
- AdamW moments, EMA weights and the importance sampler's history: saved as safetensors.
So a run killed and resumed from its newest checkpoint ends with the same weights, bit for
bit, as one that was never interrupted (tests/test_train.py checks it).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import nets
from ..data import Dataset, load_dataset
from ..denoiser import Denoiser
from ..distributed import Dist
from ..errors import InputError
from ..io import atomic_write_bytes, atomic_write_json
from ..losses import diffusion_loss, loss_weights, make_timestep_sampler
from .checkpoint import (
    check_state_dict,
    decode_tensor,
    encode_tensor,
    load_optimizer_tensors,
    newest_valid_checkpoint,
    optimizer_tensors,
    save_checkpoint,
)
from .compile import maybe_compile
from .config import TrainConfig, default_preset, parse_fourier
from .ema import EMA

RUN_FORMAT = "ddpmkit-run/1"
N_BUCKETS = 10


class TrainingDiverged(InputError):
    """A non-finite loss or gradient with ``nonfinite="stop"``."""


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
    return Run(cfg, nets.preset(preset, **over), data.summary() | {"spec": cfg.data})


def read_run(run_dir: str | os.PathLike) -> Run:
    p = Path(run_dir) / "config.json"
    if not p.is_file():
        raise InputError(f"{run_dir} is not a run directory (no config.json); train one with "
                         "'ddpmkit train --out DIR'")
    try:
        return Run.from_json(json.loads(p.read_text()))
    except json.JSONDecodeError as e:
        raise InputError(f"{p} is not valid JSON ({e.msg})") from None


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over warmup_steps, then constant or cosine decay to 0 at cfg.steps."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if cfg.lr_schedule == "cosine":
        assert cfg.steps is not None
        return cfg.lr * warm * 0.5 * (1.0 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps))
    return cfg.lr * warm


class BatchOrder:
    """Indices of global batch k: positions kB..kB+B-1 of seeded per-epoch permutations."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.B, self.seed = n, batch_size, seed
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cache[epoch] = torch.randperm(self.n, generator=g)
        return self._cache[epoch]

    def indices(self, k: int) -> torch.Tensor:
        pos = torch.arange(k * self.B, (k + 1) * self.B)
        epochs, within = pos // self.n, pos % self.n
        out = torch.empty(self.B, dtype=torch.int64)
        for e in epochs.unique().tolist():  # a batch may span epochs (or several, if B > n)
            m = epochs == e
            out[m] = self._perm(e)[within[m]]
        return out


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    elapsed_s: float
    imgs_per_s: float
    last_loss: float | None
    checkpoint: Path | None


def _rng_state(gen: torch.Generator, device: str) -> dict[str, str]:
    st = {"train_generator": encode_tensor(gen.get_state()),
          "torch_cpu": encode_tensor(torch.get_rng_state())}
    if torch.device(device).type == "cuda":
        st["torch_cuda"] = encode_tensor(torch.cuda.get_rng_state(device))
    return st


def _set_rng_state(gen: torch.Generator, st: dict[str, str], device: str) -> None:
    gen.set_state(decode_tensor(st["train_generator"]))
    torch.set_rng_state(decode_tensor(st["torch_cpu"]))
    if torch.device(device).type == "cuda" and "torch_cuda" in st:
        torch.cuda.set_rng_state(decode_tensor(st["torch_cuda"]), device)


def _dropout_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of torch's global RNG (dropout) on rank >= 1: ranks must not share dropout masks."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1)


def _rank_rng_states(dist: Dist, device: str) -> list[dict[str, str]] | None:
    """Every rank's global RNG states (dropout), gathered on all ranks (None on one process)."""
    if dist.world == 1:
        return None
    cpu = dist.all_gather(torch.get_rng_state()[None])
    out = [{"torch_cpu": encode_tensor(s)} for s in cpu]
    if torch.device(device).type == "cuda":
        for o, s in zip(out, dist.all_gather(torch.cuda.get_rng_state(device)[None])):
            o["torch_cuda"] = encode_tensor(s)
    return out


def _check_same_checkpoint(ck, dist: Dist) -> None:
    """Every rank must resume from the same checkpoint (a shared run directory)."""
    if dist.world == 1:
        return
    mine = torch.tensor([[ck.step if ck else -1,
                          int(ck.state["hashes"]["model.safetensors"][:15], 16) if ck else -1]])
    seen = dist.all_gather(mine)
    if not bool((seen == seen[0]).all()):
        steps = ", ".join(f"rank {r}: {'none' if s < 0 else f'step {s}'}"
                          for r, s in enumerate(seen[:, 0].tolist()))
        raise InputError(f"the ranks see different checkpoints to resume from ({steps}); put "
                         "the run directory on a file system every node shares")


def prepare_run_dir(run_dir: Path, resume: bool, run: Run, dist: Dist) -> None:
    """Refuse to overwrite an existing run without --resume; write config.json on a new run.

    Every rank checks before any rank writes (so all fail alike); rank 0 writes."""
    _check_run_dir(run_dir, resume, run)
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


def _check_run_dir(run_dir: Path, resume: bool, run: Run) -> None:
    cfg_path = run_dir / "config.json"
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
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


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint we resume from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a torn last line from a kill
    atomic_write_bytes(path, ("\n".join(keep) + "\n" if keep else "").encode())


def train(cfg: TrainConfig, run_dir: str | os.PathLike, *, resume: bool = False,
          progress: bool = True, device: str = "cpu", dataset: Dataset | None = None,
          dist: Dist | None = None, stop_after: int | None = None,
          on_log: Callable[[dict], None] | None = None,
          allow_world_change: bool = False) -> TrainResult:
    """Train a denoiser; write config.json, log.jsonl, checkpoints/ and samples/ in run_dir.

    ``resume``: continue from the newest valid checkpoint (from step 0 if there is none).
    ``stop_after``: return after that many steps in this call without a final checkpoint (a
    stand-in for an interruption, for tests). ``dist``: rank/world under torchrun; the global
    batch is split across ranks and every rank draws the same global noise (see
    docs/distributed.md). A checkpoint written by another number of processes is refused unless
    ``allow_world_change`` (the run then continues equal only to float rounding).
    """
    dist = dist or Dist()
    run_dir = Path(run_dir)
    data = dataset if dataset is not None else load_dataset(cfg.data, image_size=cfg.image_size,
                                                            seed=cfg.seed)
    if data.train.shape[0] == 0:
        raise InputError(f"the training split of {cfg.data} is empty")
    if cfg.batch_size % dist.world:
        raise InputError(f"--batch-size {cfg.batch_size} is not divisible by the {dist.world} "
                         "processes; choose a multiple")
    run = make_run(cfg, data)
    cfg = run.config  # "auto" values resolved for this data
    prepare_run_dir(run_dir, resume, run, dist)
    torch.manual_seed(cfg.seed)
    denoiser = run.build_denoiser().to(device)
    net = denoiser.net
    ema = EMA(net, cfg.ema_decay)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = denoiser.schedule
    weights = loss_weights(sched, cfg.weighting, gamma=cfg.gamma)
    normalizer = float(weights[1:].mean())
    ts = make_timestep_sampler(cfg.timesteps, sched, weights, stratified=cfg.t_stratified,
                               **cfg.denoiser_kwargs())
    gen = torch.Generator().manual_seed(cfg.seed)
    order = BatchOrder(data.train.shape[0], cfg.batch_size, cfg.seed)
    step, elapsed0, last = 0, 0.0, None
    if dist.rank > 0:  # same initial weights on every rank (above), own dropout masks from here
        torch.manual_seed(_dropout_seed(cfg.seed, dist.rank))
    if resume:
        ck, skipped = newest_valid_checkpoint(run_dir)
        for path, why in skipped:
            _say(f"skipping checkpoint {path.name}: {why}", dist)
        _check_same_checkpoint(ck, dist)
        if ck is not None:
            saved_world = int(ck.state.get("world_size", 1))
            if saved_world != dist.world and not allow_world_change:
                raise InputError(
                    f"{ck.path.name} was written by {saved_world} process(es), this run has "
                    f"{dist.world}; resume with {saved_world} for an exact continuation, or "
                    "pass --allow-world-change (equal only to float rounding)")
            check_state_dict(net, ck.model, f"{ck.path.name}/model.safetensors")
            check_state_dict(ema.shadow, ck.ema, f"{ck.path.name}/ema.safetensors")
            net.load_state_dict(ck.model)
            ema.load_state_dict(ck.ema, ck.state["ema_updates"])
            load_optimizer_tensors(opt, ck.optim, ck.state["optimizer_param_groups"])
            if cfg.timesteps == "importance":
                ts.load_state_dict({"loss_history": ck.optim["ts_sampler.loss_history"],
                                    "counts": ck.optim["ts_sampler.counts"]})
            _set_rng_state(gen, ck.state["rng"], device)
            ranks = ck.state.get("rng_ranks")
            if dist.rank > 0 and ranks and len(ranks) == dist.world:
                _set_rng_state(gen, ck.state["rng"] | ranks[dist.rank], device)
            elif dist.rank > 0:  # world changed: a fresh dropout stream for this rank
                torch.manual_seed(_dropout_seed(cfg.seed, dist.rank, ck.step))
            step, elapsed0 = ck.step, float(ck.state.get("elapsed_s", 0.0))
            _say(f"resuming from {ck.path.name} (step {step})", dist)
        if dist.is_main:
            _truncate_log(run_dir / "log.jsonl", step)
    model: torch.nn.Module = net
    if dist.world > 1:  # DDP averages the gradients over ranks in backward()
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        model = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    # compile the DDP wrapper, not the other way round (torch's DDPOptimizer needs to see it)
    train_net = maybe_compile(model, cfg.compile)
    train_den = run.build_denoiser(train_net)
    x_all = data.train
    b_local = cfg.batch_size // dist.world
    lo = dist.rank * b_local
    t_start = time.perf_counter()
    budget_s = cfg.minutes * 60.0 if cfg.minutes is not None else None
    bar = None
    if progress and dist.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="train", dynamic_ncols=True)
    win = _Window()
    ck_path = None
    steps_this_call = 0
    log_file = run_dir / "log.jsonl"

    def elapsed() -> float:
        return elapsed0 + time.perf_counter() - t_start

    def save(step_now: int) -> Path | None:
        for p in net.parameters():  # the same weights on every rank: all stop alike
            if not torch.isfinite(p).all():
                raise TrainingDiverged(f"weights are non-finite at step {step_now}; "
                                       "no checkpoint written")
        rank_rng = _rank_rng_states(dist, device)  # a collective: every rank takes part
        if not dist.is_main:
            return None
        otensors, groups = optimizer_tensors(opt)
        if cfg.timesteps == "importance":
            otensors["ts_sampler.loss_history"] = ts.loss_history
            otensors["ts_sampler.counts"] = ts.counts
        state = {"rng": _rng_state(gen, device), "ema_updates": ema.num_updates,
                 "optimizer_param_groups": groups, "data_position": step_now * cfg.batch_size,
                 "elapsed_s": elapsed(), "world_size": dist.world}
        if rank_rng is not None:
            state["rng_ranks"] = rank_rng
        return save_checkpoint(run_dir, step_now, model=net.state_dict(), ema=ema.state_dict(),
                               optim=otensors, state=state, keep=cfg.keep_checkpoints)

    def done() -> bool:
        if cfg.steps is not None:
            return step >= cfg.steps
        over = torch.tensor([float(elapsed() >= budget_s)])  # type: ignore[operator]
        # every rank must stop at the same step: rank 0's clock decides
        return bool(dist.broadcast(over).item())

    net.train()
    finished = done()
    while not finished:
        if stop_after is not None and steps_this_call >= stop_after:
            if bar is not None:
                bar.close()
            return TrainResult(run_dir, step, elapsed(), 0.0, _mean_over_ranks(last, dist),
                               ck_path)
        t_step = time.perf_counter()
        idx = order.indices(step)
        t, imp = ts.sample(cfg.batch_size, gen)
        noise = torch.randn((cfg.batch_size, *x_all.shape[1:]), generator=gen)
        sl = slice(lo, lo + b_local)
        x0 = x_all[idx[sl]].to(device)
        t_l, noise_l = t[sl].to(device), noise[sl].to(device)
        imp_l = imp[sl].to(device) if cfg.timesteps != "uniform" else None
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                            enabled=cfg.bf16):
            out = diffusion_loss(train_den, x0, weights, t_l, noise_l, imp_l, normalizer)
        loss = out.loss
        bad = None
        finite = bool(torch.isfinite(loss))
        if dist.world > 1:  # one decision for all ranks, else DDP's all-reduce would hang
            finite = bool(dist.all_reduce_sum(torch.tensor([float(not finite)])).item() == 0)
        if not finite:
            bad = f"loss is {loss.item()} at step {step + 1} (t in {t_l.min().item()}.." \
                  f"{t_l.max().item()}, weighting {cfg.weighting})"
            if dist.world > 1:
                bad = f"{bad} on rank {dist.rank} (non-finite on at least one rank)"
        else:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(net.parameters(),
                                                cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            if not torch.isfinite(gn):
                bad = f"gradient norm is {gn.item()} at step {step + 1} (loss {loss.item():.4g})"
        if bad is not None:
            if cfg.nonfinite == "stop":
                raise TrainingDiverged(f"training diverged: {bad}; lower --lr or use "
                                       "--nonfinite skip (no checkpoint was written from it)")
            _say(f"skipping step: {bad}", dist)
            opt.zero_grad(set_to_none=True)
        else:
            opt.step()
            ema.update(net)
            if cfg.timesteps == "importance":  # every rank keeps the same history
                ts.update(dist.all_gather(t_l), dist.all_gather(out.per_example))
            win.add(out, gn.item(), sched.T)
            last = loss.item()
        step += 1
        steps_this_call += 1
        finished = done()
        win.imgs += cfg.batch_size
        win.seconds += time.perf_counter() - t_step
        if bar is not None:
            bar.update(1)
            if last is not None:
                bar.set_postfix(loss=f"{last:.4f}", refresh=False)
        if step % cfg.log_every == 0 or finished:
            rec = win.reduce(dist).record(step, lr_at(cfg, step - 1), elapsed())
            if dist.is_main:
                with open(log_file, "a") as f:
                    f.write(json.dumps(rec) + "\n")
                if on_log is not None:
                    on_log(rec)
            win = _Window()
        if step % cfg.checkpoint_every == 0 or finished:
            ck_path = save(step)
            dist.barrier()
        if cfg.sample_every and (step % cfg.sample_every == 0 or finished) and dist.is_main:
            _sample_grid(ema.shadow, run, run_dir / "samples" / f"step_{step:07d}.png", device)
    if bar is not None:
        bar.close()
    total = elapsed()
    ips = step * cfg.batch_size / total if total > 0 else 0.0
    return TrainResult(run_dir, step, total, ips, _mean_over_ranks(last, dist), ck_path)


def _mean_over_ranks(x: float | None, dist: Dist) -> float | None:
    """The loss of the global batch from the ranks' half-batch means (equal local batches)."""
    if dist.world == 1 or x is None:
        return x
    return float(dist.all_reduce_sum(torch.tensor([x], dtype=torch.float64)).item()) / dist.world


def _say(msg: str, dist: Dist) -> None:
    if dist.is_main:
        print(f"ddpmkit train: {msg}", flush=True)


class _Window:
    """Accumulates losses between two log lines, by t bucket."""

    def __init__(self) -> None:
        self.loss_sum = torch.zeros(N_BUCKETS, dtype=torch.float64)
        self.mse_sum = torch.zeros(N_BUCKETS, dtype=torch.float64)
        self.count = torch.zeros(N_BUCKETS, dtype=torch.float64)
        self.losses: list[float] = []
        self.grad_norms: list[float] = []
        self.imgs = 0
        self.seconds = 0.0

    def add(self, out, grad_norm: float, T: int) -> None:
        b = ((out.t.cpu() - 1) * N_BUCKETS // T).clamp(0, N_BUCKETS - 1)
        self.loss_sum.index_add_(0, b, out.per_example.double().cpu())
        self.mse_sum.index_add_(0, b, out.mse.double().cpu())
        self.count.index_add_(0, b, torch.ones_like(b, dtype=torch.float64))
        self.losses.append(out.loss.item())
        self.grad_norms.append(grad_norm)

    def reduce(self, dist: Dist) -> _Window:
        """Sum the per-bucket statistics and mean losses over ranks (one all-reduce)."""
        if dist.world == 1:
            return self
        n = len(self.losses)
        packed = torch.cat([self.loss_sum, self.mse_sum, self.count,
                            torch.tensor([sum(self.losses)], dtype=torch.float64)])
        packed = dist.all_reduce_sum(packed)
        self.loss_sum, self.mse_sum, self.count = packed[:-1].split(N_BUCKETS)
        self.losses = [float(packed[-1]) / dist.world / n] * n if n else []
        return self

    def record(self, step: int, lr: float, elapsed: float) -> dict:
        def per(x):
            return [None if c == 0 else float(v / c) for v, c in zip(x, self.count)]

        n = len(self.losses)
        return {"step": step, "loss": sum(self.losses) / n if n else None,
                "loss_by_t": per(self.loss_sum), "mse_by_t": per(self.mse_sum), "lr": lr,
                "grad_norm": sum(self.grad_norms) / n if n else None,
                "imgs_per_s": self.imgs / self.seconds if self.seconds else None,
                "elapsed_s": elapsed}


@torch.no_grad()
def _sample_grid(net, run: Run, path: Path, device: str, n: int = 64) -> None:
    from ..plots import save_samples
    from ..samplers import sample

    den = run.build_denoiser(net)
    shape = (n, *run.data["shape"])
    res = sample(den, shape, sampler="ancestral", steps=min(100, run.config.T), seed=0,
                 device=device, clip="clip" if run.data["kind"] == "image" else "none")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_samples(res.x.cpu(), path, kind=run.data["kind"])
