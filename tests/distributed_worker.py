"""The torchrun worker of tests/test_distributed.py: ``python -m torch.distributed.run
--standalone --nproc_per_node=2 tests/distributed_worker.py MODE OUT`` runs one multi-process
scenario (MODE train, crash or hang), or ``... cli LOG_DIR ARGV...`` runs ``ddpmkit ARGV`` and
records each rank's writes and exit code. The settings the tests compare against live here.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from ddpmkit.cli import main as cli_main
from ddpmkit.data import load_dataset
from ddpmkit.distributed import init_from_env
from ddpmkit.evaluate import eval_samples
from ddpmkit.likelihood import negative_elbo_bpd
from ddpmkit.train import TrainConfig, load_denoiser, train

TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "norm_groups": 4, "mid_attn": False}
# equivalence: uniform t, no dropout (dropout masks are per rank, so they cannot match 1 process)
CFG_EQ = dict(data="digits", steps=6, batch_size=16, checkpoint_every=3, log_every=2,
              sample_every=0, net_overrides=TINY, T=50, warmup_steps=0, lr=1e-3)
# exact resume: dropout (per-rank RNG streams) and the importance sampler (all-gathered history)
CFG_RS = CFG_EQ | dict(steps=16, checkpoint_every=4, T=20, timesteps="importance",
                       weighting="elbo", net_overrides=TINY | {"dropout": 0.2})
BPD_N, BPD_BATCH = 20, 8
BPD_CASES = [("exact", "weight"), ("stratified", "weight"), ("stratified", "uniform")]
# 20 samples in chunks of 8: rank 0 draws chunks 0 and 2, rank 1 chunk 1
EVAL_SAMPLES = dict(n=20, chunk=8, steps=3, sampler="ddim", seed=3)


def _worker(mode: str, out: Path) -> None:
    """Run under torchrun: one of the multi-process scenarios the tests check."""
    torch.set_num_threads(1)
    dist, device = init_from_env("cpu")
    try:
        if mode == "train":
            ds = load_dataset("digits")
            train(TrainConfig(**CFG_EQ), out / "eq", dataset=ds, dist=dist, progress=False)
            train(TrainConfig(**CFG_RS), out / "rs_a", dataset=ds, dist=dist, progress=False)
            # an interruption after 6 steps (checkpoint at 4), then a resume from the files
            train(TrainConfig(**CFG_RS), out / "rs_b", dataset=ds, dist=dist, progress=False,
                  stop_after=6)
            train(TrainConfig(**CFG_RS), out / "rs_b", dataset=ds, dist=dist, progress=False,
                  resume=True)
            loaded = load_denoiser(out / "eq", verbose=False)
            den = loaded.denoiser
            res = {f"{m}/{q}": negative_elbo_bpd(
                       den, ds.test[:BPD_N], dist=dist, method=m, batch_size=BPD_BATCH, seed=5,
                       proposal=q, strata=5).as_dict()
                   for m, q in BPD_CASES}
            _, x = eval_samples(loaded, **EVAL_SAMPLES, dist=dist)
            if dist.is_main:
                (out / "bpd.json").write_text(json.dumps(res))
                torch.save(x, out / "eval_samples.pt")
        elif mode == "crash":  # rank 1 dies; rank 0 waits in a collective it can never finish
            if dist.rank == 1:
                raise RuntimeError("rank 1 fails on purpose")
            dist.barrier()
        elif mode == "hang":  # rank 1 never arrives; rank 0's collective times out
            if dist.rank == 1:
                time.sleep(3600)
            dist.barrier()
        else:
            raise ValueError(f"unknown mode {mode!r}")
    finally:
        dist.close()


def _cli_worker(log_dir: Path, argv: list[str]) -> None:
    """``ddpmkit ARGV`` under torchrun, recording the files this rank opens for writing or
    renames into place (atomic writes) and its exit code in LOG_DIR/rank<R>.json. A rank that
    is done waits (up to 60 s) for the others' records before it exits: torchrun stops the
    remaining ranks as soon as one exits with an error, which could cut a record short."""
    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    writes: list[str] = []

    def hook(event: str, args: tuple) -> None:
        if event == "os.rename":
            writes.append(os.fspath(args[1]))
        elif event == "open" and isinstance(args[1], str) and set(args[1]) & set("wax+"):
            writes.append(os.fspath(args[0]))

    sys.addaudithook(hook)
    try:
        code = cli_main(argv)
    except SystemExit as e:
        code = e.code
    except BaseException:
        code = 1
        raise
    finally:
        mine = list(writes)  # before the hook sees this file's own writes
        (log_dir / f"rank{rank}.json").write_text(json.dumps({"code": code, "writes": mine}))
        end = time.monotonic() + 60
        while (len(list(log_dir.glob("rank*.json"))) < world and time.monotonic() < end):
            time.sleep(0.05)
    sys.exit(code)


if __name__ == "__main__":
    if sys.argv[1] == "cli":
        _cli_worker(Path(sys.argv[2]), sys.argv[3:])
    else:
        _worker(sys.argv[1], Path(sys.argv[2]))
