"""The training loop: AdamW on the weighted x0-regression, EMA, checkpoints, exact resume.

Everything random is a function of the seed and the step, or saved in the checkpoint:
- the data order: epoch e is a permutation drawn from a generator seeded with (seed, e), and
  batch k takes positions k*B .. k*B + B - 1 of the concatenated epochs (no state to save);
- t and the noise: one generator for the whole global batch, its state saved in state.json;
- dropout: torch's global RNG, its state saved in state.json (see rng.py);
- AdamW moments, EMA weights and the importance sampler's history: saved as safetensors.
So a run killed and resumed from its newest checkpoint ends with the same weights, bit for
bit, as one that was never interrupted (tests/test_train.py checks it).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import Dataset, load_dataset
from ..denoiser import Denoiser
from ..distributed import Dist
from ..errors import InputError
from ..losses import (
    LossOutput,
    TimestepSampler,
    diffusion_loss,
    loss_weights,
    make_timestep_sampler,
)
from .checkpoint import (
    LoadedCheckpoint,
    check_state_dict,
    load_optimizer_tensors,
    newest_valid_checkpoint,
    optimizer_tensors,
    save_checkpoint,
)
from .compile import maybe_compile
from .config import TrainConfig
from .ema import EMA
from .lock import RunLock
from .rng import dropout_seed, rank_rng_states, restore_rng, rng_state
from .run import Run, append_log, make_run, prepare_run_dir, truncate_log
from .signals import StopOnSignal, StopRequested

N_BUCKETS = 10


class TrainingDiverged(InputError):
    """A non-finite loss or gradient with ``nonfinite="stop"``."""


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


@dataclass
class _Training:
    """One run's live objects: what a step reads and changes, and a checkpoint saves."""

    cfg: TrainConfig
    dist: Dist
    device: str
    net: torch.nn.Module  # the bare net: its weights are the ones clipped, saved and loaded
    ema: EMA
    opt: torch.optim.Optimizer
    ts: TimestepSampler
    gen: torch.Generator  # t and the noise of the whole global batch, the same on every rank
    weights: torch.Tensor  # w(t), float64 (T+1,)
    normalizer: float  # the mean of w over t = 1..T
    order: BatchOrder
    x_all: torch.Tensor  # the training split
    y_all: torch.Tensor | None  # its labels, for a class-conditional run (else None)
    net_classes: int = 0  # K of a class-conditional net: index K is the null class


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
    data = _training_data(cfg, dataset, dist)
    run = make_run(cfg, data)
    prepare_run_dir(run_dir, resume, run, dist)
    with _run_lock(run_dir, dist), StopOnSignal() as stop:
        return _train(run, data, run_dir, resume, progress, device, dist, stop_after, on_log,
                      allow_world_change, stop)


def _train(run: Run, data: Dataset, run_dir: Path, resume: bool, progress: bool, device: str,
           dist: Dist, stop_after: int | None, on_log: Callable[[dict], None] | None,
           allow_world_change: bool, stop: StopOnSignal) -> TrainResult:
    """The loop of :func:`train`, inside the run lock and the signal handlers."""
    cfg = run.config  # "auto" values resolved for this data
    tr = _setup(run, data, dist, device)
    step, elapsed0 = _resume(tr, run_dir, allow_world_change) if resume else (0, 0.0)
    den = run.build_denoiser(_parallel(tr.net, cfg, dist, device))
    bar = _progress_bar(cfg.steps, step) if progress and dist.is_main else None
    t0 = time.perf_counter() - elapsed0  # elapsed seconds = time.perf_counter() - t0
    win, last, ck_path, calls = _Window(), None, None, 0
    tr.net.train()
    finished = _done(cfg, time.perf_counter() - t0, step, dist)
    while not finished and (stop_after is None or calls < stop_after):
        t_step = time.perf_counter()
        res = _step(tr, den, _batch(tr, step), step)
        if res is not None:
            win.add(*res, den.T)
            last = res[0].loss.item()
        step, calls = step + 1, calls + 1
        finished = _done(cfg, time.perf_counter() - t0, step, dist)
        win.imgs += cfg.batch_size
        win.seconds += time.perf_counter() - t_step
        _show(bar, last)
        if step % cfg.log_every == 0 or finished:
            rec = win.reduce(dist).record(step, lr_at(cfg, step - 1), time.perf_counter() - t0)
            _log(run_dir, rec, dist, on_log)
            win = _Window()
        if step % cfg.checkpoint_every == 0 or finished:
            ck_path = _save(tr, run_dir, step, time.perf_counter() - t0)
            dist.barrier()
        if cfg.sample_every and (step % cfg.sample_every == 0 or finished) and dist.is_main:
            _sample_grid(tr.ema.shadow, run, run_dir / "samples" / f"step_{step:07d}.png", device)
        signum = _stop_signal(stop, dist)
        if signum is not None and not finished:
            _stop_here(tr, run_dir, step, time.perf_counter() - t0, signum, ck_path, bar)
    if bar is not None:
        bar.close()
    total = time.perf_counter() - t0
    ips = step * cfg.batch_size / total if finished and total > 0 else 0.0  # 0 if stopped
    return TrainResult(run_dir, step, total, ips, _mean_over_ranks(last, dist), ck_path)


@contextlib.contextmanager
def _run_lock(run_dir: Path, dist: Dist):
    """RUN_DIR/.lock held by rank 0 for the whole run; every rank fails alike without it."""
    lock, err = RunLock(run_dir), None
    if dist.is_main:
        try:
            lock.acquire()
        except InputError as e:
            err = e
    failed = bool(dist.broadcast(torch.tensor([float(err is not None)])).item())
    if failed:
        raise err or InputError(f"{run_dir} is being trained by another process (rank 0 could "
                                "not take its lock)")
    try:
        yield lock
    finally:
        lock.release()


def _stop_signal(stop: StopOnSignal, dist: Dist) -> int | None:
    """The signal that asks every rank to stop after this step (one rank signalled is
    enough: the flags are summed over ranks), or None."""
    mine = stop.requested or 0
    if dist.world > 1:  # one collective a step; several signalled ranks: the largest signal
        mine = int(dist.all_gather(torch.tensor([[float(mine)]], dtype=torch.float64)).max())
    return mine or None


def _stop_here(tr: _Training, run_dir: Path, step: int, elapsed: float, signum: int,
               ck_path: Path | None, bar) -> None:
    """Checkpoint this exact step (if the loop did not just do it), log why, and raise."""
    if ck_path is None or not ck_path.name.endswith(f"{step:07d}"):
        _save(tr, run_dir, step, elapsed)
    _log(run_dir, {"step": step, "event": "stopped", "signal": signal.Signals(signum).name,
                   "elapsed_s": elapsed}, tr.dist, None)
    # no rank leaves before rank 0 has written: under torchrun the first rank to exit makes
    # the launcher signal the others, which would abort a write still in progress
    tr.dist.barrier()
    if bar is not None:
        bar.close()
    raise StopRequested(signum, step)


# --- setting up -----------------------------------------------------------------------------

def _training_data(cfg: TrainConfig, dataset: Dataset | None, dist: Dist) -> Dataset:
    data = dataset if dataset is not None else load_dataset(cfg.data, image_size=cfg.image_size,
                                                            seed=cfg.seed)
    if data.train.shape[0] == 0:
        raise InputError(f"the training split of {cfg.data} is empty")
    if cfg.batch_size % dist.world:
        raise InputError(f"--batch-size {cfg.batch_size} is not divisible by the {dist.world} "
                         "processes; choose a multiple")
    return data


def _setup(run: Run, data: Dataset, dist: Dist, device: str) -> _Training:
    """A fresh net (the same initial weights on every rank: seeded), its EMA, AdamW, w(t) and
    the t sampler; then rank >= 1 gets its own dropout stream."""
    cfg = run.config
    torch.manual_seed(cfg.seed)
    denoiser = run.build_denoiser().to(device)
    net = denoiser.net
    weights = loss_weights(denoiser.schedule, cfg.weighting, gamma=cfg.gamma)
    ts = make_timestep_sampler(cfg.timesteps, denoiser.schedule, weights,
                               stratified=cfg.t_stratified, uniform_mix=cfg.t_uniform_mix,
                               decoder_share=cfg.t_decoder_share,
                               **cfg.denoiser_kwargs())
    tr = _Training(
        cfg=cfg, dist=dist, device=device, net=net, ema=EMA(net, cfg.ema_decay),
        opt=torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay),
        ts=ts, gen=torch.Generator().manual_seed(cfg.seed), weights=weights,
        normalizer=float(weights[1:].mean()),
        order=BatchOrder(data.train.shape[0], cfg.batch_size, cfg.seed), x_all=data.train,
        y_all=data.train_labels if cfg.conditional else None,
        net_classes=int(getattr(run.net_config, "num_classes", 0)))
    if dist.rank > 0:
        torch.manual_seed(dropout_seed(cfg.seed, dist.rank))
    return tr


def _parallel(net: torch.nn.Module, cfg: TrainConfig, dist: Dist, device: str,
              ) -> torch.nn.Module:
    """The net as trained: DDP on several processes (it averages the gradients over ranks in
    backward()), then torch.compile if asked."""
    model: torch.nn.Module = net
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        model = DDP(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    # compile the DDP wrapper, not the other way round (torch's DDPOptimizer needs to see it)
    return maybe_compile(model, cfg.compile)


# --- resume and checkpoints -----------------------------------------------------------------

def _resume(tr: _Training, run_dir: Path, allow_world_change: bool) -> tuple[int, float]:
    """Load the newest valid checkpoint into ``tr``; (its step, elapsed seconds), (0, 0.0)
    if there is none. Log lines past that step are dropped."""
    ck, skipped = newest_valid_checkpoint(
        run_dir, expected={k: tuple(v.shape) for k, v in tr.net.state_dict().items()})
    for path, why in skipped:
        _say(f"skipping checkpoint {path.name}: {why}", tr.dist)
    _check_same_checkpoint(ck, tr.dist)
    step, elapsed = 0, 0.0
    if ck is not None:
        saved_world = int(ck.state.get("world_size", 1))
        if saved_world != tr.dist.world and not allow_world_change:
            raise InputError(
                f"{ck.path.name} was written by {saved_world} process(es), this run has "
                f"{tr.dist.world}; resume with {saved_world} for an exact continuation, or "
                "pass --allow-world-change (equal only to float rounding)")
        _load_checkpoint(tr, ck)
        step, elapsed = ck.step, float(ck.state.get("elapsed_s", 0.0))
        _say(f"resuming from {ck.path.name} (step {step})", tr.dist)
    if tr.dist.is_main:
        truncate_log(run_dir, step)
    return step, elapsed


def _check_same_checkpoint(ck: LoadedCheckpoint | None, dist: Dist) -> None:
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


def _load_checkpoint(tr: _Training, ck: LoadedCheckpoint) -> None:
    """The inverse of :func:`_checkpoint_state`: weights, EMA, AdamW, t sampler, RNG states."""
    check_state_dict(tr.net, ck.model, f"{ck.path.name}/model.safetensors")
    check_state_dict(tr.ema.shadow, ck.ema, f"{ck.path.name}/ema.safetensors")
    tr.net.load_state_dict(ck.model)
    tr.ema.load_state_dict(ck.ema, ck.state["ema_updates"])
    load_optimizer_tensors(tr.opt, ck.optim, ck.state["optimizer_param_groups"])
    if tr.cfg.timesteps == "importance":
        tr.ts.load_state_dict({"loss_history": ck.optim["ts_sampler.loss_history"],
                               "counts": ck.optim["ts_sampler.counts"]})
    restore_rng(tr.gen, ck.state, ck.step, tr.cfg.seed, tr.dist, tr.device)


def _checkpoint_state(tr: _Training, step: int, elapsed: float,
                      ) -> tuple[dict[str, torch.Tensor], dict]:
    """(optim.safetensors tensors, state.json fields) at ``step``, besides the weights."""
    otensors, groups = optimizer_tensors(tr.opt)
    if tr.cfg.timesteps == "importance":
        otensors["ts_sampler.loss_history"] = tr.ts.loss_history
        otensors["ts_sampler.counts"] = tr.ts.counts
    state = {"rng": rng_state(tr.gen, tr.device), "ema_updates": tr.ema.num_updates,
             "optimizer_param_groups": groups, "data_position": step * tr.cfg.batch_size,
             "elapsed_s": elapsed, "world_size": tr.dist.world}
    return otensors, state


def _save(tr: _Training, run_dir: Path, step: int, elapsed: float) -> Path | None:
    """Write checkpoint ``step`` on rank 0 (every rank takes part in gathering RNG states);
    None on the other ranks."""
    for p in tr.net.parameters():  # the same weights on every rank: all stop alike
        if not torch.isfinite(p).all():
            raise TrainingDiverged(f"weights are non-finite at step {step}; "
                                   "no checkpoint written")
    rank_rng = rank_rng_states(tr.dist, tr.device)  # a collective: every rank takes part
    if not tr.dist.is_main:
        return None
    otensors, state = _checkpoint_state(tr, step, elapsed)
    if rank_rng is not None:
        state["rng_ranks"] = rank_rng
    # a second signal during the write raises KeyboardInterrupt in it: save_checkpoint then
    # removes its temporary directory, and the previous checkpoints stay as they were
    return save_checkpoint(run_dir, step, model=tr.net.state_dict(), ema=tr.ema.state_dict(),
                           optim=otensors, state=state, keep=tr.cfg.keep_checkpoints)


# --- one step -------------------------------------------------------------------------------

def _batch(tr: _Training, step: int) -> tuple[torch.Tensor | None, ...]:
    """This rank's share (x0, t, noise, importance weight or None, labels or None) of global
    batch ``step``. Every rank draws the whole batch's t, noise and label dropout, so the
    shares add up to one batch; an unconditional run draws exactly what it drew before."""
    cfg, dist = tr.cfg, tr.dist
    idx = tr.order.indices(step)
    t, imp = tr.ts.sample(cfg.batch_size, tr.gen)
    noise = torch.randn((cfg.batch_size, *tr.x_all.shape[1:]), generator=tr.gen)
    b_local = cfg.batch_size // dist.world
    sl = slice(dist.rank * b_local, (dist.rank + 1) * b_local)
    x0 = tr.x_all[idx[sl]].to(tr.device)
    t_l, noise_l = t[sl].to(tr.device), noise[sl].to(tr.device)
    imp_l = imp[sl].to(tr.device) if cfg.timesteps != "uniform" else None
    y_l = None
    if tr.y_all is not None:  # classifier-free guidance: drop a label to the null class
        y = tr.y_all[idx].clone()
        y[torch.rand(cfg.batch_size, generator=tr.gen) < cfg.cond_drop] = tr.net_classes
        y_l = y[sl].to(tr.device)
    return x0, t_l, noise_l, imp_l, y_l


def _step(tr: _Training, den: Denoiser, batch: tuple[torch.Tensor, ...], step: int,
          ) -> tuple[LossOutput, float] | None:
    """One AdamW step and EMA update: (loss output, gradient norm), or None for a step skipped
    as non-finite (``nonfinite="skip"``; "stop" raises TrainingDiverged)."""
    cfg = tr.cfg
    x0, t, noise, imp, y = batch
    for g in tr.opt.param_groups:
        g["lr"] = lr_at(cfg, step)
    with torch.autocast(device_type=torch.device(tr.device).type, dtype=torch.bfloat16,
                        enabled=cfg.bf16):
        out = diffusion_loss(den, x0, tr.weights, t, noise, imp, tr.normalizer, y=y)
    bad = _nonfinite_loss(out.loss, t, step, tr)
    if bad is None:
        tr.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(tr.net.parameters(),
                                            cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        if not torch.isfinite(gn):
            bad = f"gradient norm is {gn.item()} at step {step + 1} (loss {out.loss.item():.4g})"
    if bad is not None:
        if cfg.nonfinite == "stop":
            raise TrainingDiverged(f"training diverged: {bad}; lower --lr or use "
                                   "--nonfinite skip (no checkpoint was written from it)")
        _say(f"skipping step: {bad}", tr.dist)
        tr.opt.zero_grad(set_to_none=True)
        return None
    tr.opt.step()
    tr.ema.update(tr.net)
    if cfg.timesteps == "importance":  # every rank keeps the same history
        tr.ts.update(tr.dist.all_gather(t), tr.dist.all_gather(out.per_example))
    return out, gn.item()


def _nonfinite_loss(loss: torch.Tensor, t: torch.Tensor, step: int, tr: _Training,
                    ) -> str | None:
    """Why the loss is not finite on some rank (one decision for all ranks, else DDP's
    all-reduce in backward() would hang), or None."""
    finite = bool(torch.isfinite(loss))
    if tr.dist.world > 1:
        finite = bool(tr.dist.all_reduce_sum(torch.tensor([float(not finite)])).item() == 0)
    if finite:
        return None
    bad = f"loss is {loss.item()} at step {step + 1} (t in {t.min().item()}.." \
          f"{t.max().item()}, weighting {tr.cfg.weighting})"
    if tr.dist.world > 1:
        bad = f"{bad} on rank {tr.dist.rank} (non-finite on at least one rank)"
    return bad


def _done(cfg: TrainConfig, elapsed: float, step: int, dist: Dist) -> bool:
    """The step budget is reached, or the time budget (rank 0's clock decides for all ranks,
    so that every rank stops at the same step)."""
    if cfg.steps is not None:
        return step >= cfg.steps
    over = torch.tensor([float(elapsed >= cfg.minutes * 60.0)])  # type: ignore[operator]
    return bool(dist.broadcast(over).item())


# --- reporting ------------------------------------------------------------------------------

def _mean_over_ranks(x: float | None, dist: Dist) -> float | None:
    """The loss of the global batch from the ranks' half-batch means (equal local batches)."""
    if dist.world == 1 or x is None:
        return x
    return float(dist.all_reduce_sum(torch.tensor([x], dtype=torch.float64)).item()) / dist.world


def _log(run_dir: Path, rec: dict, dist: Dist, on_log: Callable[[dict], None] | None) -> None:
    """Rank 0 appends the record to log.jsonl and hands it to ``on_log``."""
    if dist.is_main:
        append_log(run_dir, rec)
        if on_log is not None:
            on_log(rec)


def _say(msg: str, dist: Dist) -> None:
    if dist.is_main:
        print(f"ddpmkit train: {msg}", flush=True)


def _progress_bar(total: int | None, step: int):
    from ..progress import progress

    return progress(total=total, initial=step, unit="step", desc="train")


def _show(bar, last: float | None) -> None:
    if bar is not None:
        bar.update(1)
        if last is not None:
            bar.set_postfix(loss=f"{last:.4f}", refresh=False)


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
                "elapsed_s": elapsed, "threads": torch.get_num_threads()}


def _sample_grid(net: torch.nn.Module, run: Run, path: Path, device: str, n: int = 64) -> None:
    """The preview of the EMA weights: n ancestral samples, at most 100 steps, seed 0."""
    from ..figures import preview, save

    pic = preview(run.build_denoiser(net), run.data["kind"], run.data["shape"], n=n,
                  steps=min(100, run.config.T), seed=0, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(pic.samples, path)
