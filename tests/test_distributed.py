"""Several processes under torchrun (gloo on CPU): DDP training equals one process, exact resume,
sharded sampling and ELBO, `ddpmkit eval` equal to one process, clear errors, and a failing rank
never hangs the job.

The multi-process parts run tests/distributed_worker.py under torchrun (``python -m
torch.distributed.run --standalone`` picks a free port per launch); the single-process
references run in pytest.
Every launch is time-limited, and ``DDPMKIT_DIST_TIMEOUT_S`` bounds each collective, so a hang
fails the test instead of blocking CI.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from distributed_worker import BPD_BATCH, BPD_CASES, BPD_N, CFG_EQ, EVAL_SAMPLES, TINY
from safetensors.torch import load_file

from ddpmkit import InputError
from ddpmkit.cli import main as cli_main
from ddpmkit.data import load_dataset
from ddpmkit.distributed import Dist, init_from_env
from ddpmkit.evaluate import eval_samples
from ddpmkit.likelihood import negative_elbo_bpd
from ddpmkit.train import TrainConfig, list_checkpoints, load_denoiser, train

WORKER = str(Path(__file__).with_name("distributed_worker.py"))

# max |w_2proc - w_1proc| after 6 AdamW steps at lr 1e-3 (measured 7.5e-7; see the test)
WEIGHT_ATOL = 2e-5
LAUNCH_TIMEOUT_S = 300
# a tiny digits run for `ddpmkit eval` (what matters is that the numbers match, not their value)
EVAL_CFG = dict(data="digits", steps=2, batch_size=16, checkpoint_every=2, log_every=1,
                sample_every=0, net_overrides=TINY, T=20, warmup_steps=0)
FILES = ("model.safetensors", "ema.safetensors", "optim.safetensors")


# ------------------------------------------------------------------ launching torchrun workers


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "DDPMKIT_DIST_TIMEOUT_S": "120",
                "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"} | extra)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _descendants(pid: int) -> list[int]:
    """Child processes (transitively) of pid, from /proc: torchrun puts workers in new sessions."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def torchrun(args: list[str], nproc: int = 2, timeout: float = LAUNCH_TIMEOUT_S,
             **env: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=nproc ARGS``; kills the whole tree on time-out."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(**env), start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [*_descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, _ = proc.communicate()
        pytest.fail(f"torchrun {' '.join(args)} did not finish in {timeout} s (a hang):\n"
                    f"{out[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


def _ok(res: subprocess.CompletedProcess) -> str:
    fatal = res.stdout.find("Fatal Python error")  # faulthandler's stacks of a crashed rank
    shown = res.stdout[fatal:fatal + 5000] + "\n...\n" if fatal >= 0 else ""
    assert res.returncode == 0, f"exit {res.returncode}:\n{shown}{res.stdout[-5000:]}"
    return res.stdout


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    """One torchrun launch (2 processes) training the runs the tests below compare."""
    out = tmp_path_factory.mktemp("ddp")
    _ok(torchrun([WORKER, "train", str(out)]))
    return out


@pytest.fixture(scope="module")
def single_eq(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("single") / "eq"
    train(TrainConfig(**CFG_EQ), out, dataset=digits, progress=False)
    return out


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory, digits):
    run = tmp_path_factory.mktemp("evalrun") / "run"
    train(TrainConfig(**EVAL_CFG), run, dataset=digits, progress=False)
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    """A copy of the run for one test (its eval/ folder is the test's own)."""
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def _eval_files(run: Path) -> dict[str, dict]:
    """RUN/eval/*.json by file name without the wall-clock times; the folder is then removed."""
    d = run / "eval"
    out = {p.name: {k: v for k, v in json.loads(p.read_text()).items()
                    if k not in ("seconds", "sample_seconds")} for p in d.glob("*.json")}
    shutil.rmtree(d)
    return out


def _plain_bpd(run: Path, n: int, **kw):
    """negative_elbo_bpd on the first n test digits, with eval's decoder (17 levels)."""
    from ddpmkit.likelihood import DecoderSpec

    data = load_dataset("digits")
    return negative_elbo_bpd(load_denoiser(run, verbose=False).denoiser, data.test[:n],
                             decoder=DecoderSpec(kind="discrete", levels=data.levels), **kw)


def _cli_records(log_dir: Path) -> dict[int, dict]:
    return {int(p.stem[4:]): json.loads(p.read_text()) for p in log_dir.glob("rank*.json")}


def _tensors(run_dir: Path, ck: int = -1) -> dict[str, dict[str, torch.Tensor]]:
    path = list_checkpoints(run_dir)[ck]
    return {f: load_file(str(path / f)) for f in FILES}


def _max_abs_diff(a: dict, b: dict, files=FILES) -> float:
    worst = 0.0
    for f in files:
        assert a[f].keys() == b[f].keys(), f
        for k in a[f]:
            d = (a[f][k].double() - b[f][k].double()).abs().max().item()
            worst = max(worst, d)
    return worst


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(x)["loss"] for x in (run_dir / "log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------- the tests


@pytest.mark.subprocess
def test_two_processes_with_global_batch_match_one_process(ddp_runs, single_eq):
    """N steps on 2 processes (global batch B = 2 x 8) end with the weights of 1 process, batch B.

    Not bit-equal: each rank's loss is the mean over its 8 examples and DDP averages the two
    gradients, (g_0 + g_1)/2, where one process sums all 16 per-example terms in another order;
    the half-batch convolutions may also round differently. AdamW then divides by sqrt(v), so
    an entry whose gradient nearly cancels can move by a visible part of lr. Measured on this
    CPU: max |diff| 7.5e-7 on the weights and the EMA (relative norm 1.2e-6 per tensor) after
    6 steps at lr 1e-3; tolerance 2e-5 (2 % of one step), while training moves them by > 2e-3.
    """
    two, one = _tensors(ddp_runs / "eq"), _tensors(single_eq)
    diff = _max_abs_diff(two, one, files=("model.safetensors", "ema.safetensors"))
    assert diff < WEIGHT_ATOL, diff
    # the moments of AdamW agree too, per tensor in relative norm (entries near 0 cancel)
    for k, v in one["optim.safetensors"].items():
        d = (two["optim.safetensors"][k].double() - v.double()).norm()
        assert d <= 1e-4 * v.double().norm() + 1e-30, k
    # the comparison can fail: training moved the weights far more than the tolerance
    from ddpmkit.train import read_run

    torch.manual_seed(CFG_EQ.get("seed", 0))
    init = read_run(single_eq).build_denoiser().net.state_dict()
    moved = max((one["model.safetensors"][k] - v).abs().max().item() for k, v in init.items())
    assert moved > 100 * WEIGHT_ATOL, moved
    # the logged loss is the global batch's on rank 0 (all-reduced), equal to 1 process's
    assert _losses(ddp_runs / "eq") == pytest.approx(_losses(single_eq), rel=1e-5)
    state = json.loads((list_checkpoints(ddp_runs / "eq")[-1] / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2


@pytest.mark.subprocess
def test_log_is_written_once_by_rank_zero(ddp_runs):
    lines = (ddp_runs / "eq" / "log.jsonl").read_text().splitlines()
    steps = [json.loads(x)["step"] for x in lines]
    assert steps == [2, 4, 6]  # one line per log step: not one per rank
    assert [p.name for p in list_checkpoints(ddp_runs / "eq")] == ["step_0000003",
                                                                   "step_0000006"]


@pytest.mark.subprocess
def test_two_process_resume_is_bit_identical_to_an_uninterrupted_run(ddp_runs):
    """Killed after 6 steps (checkpoint at 4) and resumed on 2 processes: the same bits, with
    dropout (each rank's RNG stream is saved) and the importance sampler (gathered history)."""
    a, b = _tensors(ddp_runs / "rs_a"), _tensors(ddp_runs / "rs_b")
    for f in FILES:
        for k in a[f]:
            assert torch.equal(a[f][k], b[f][k]), (f, k)
    assert _losses(ddp_runs / "rs_a") == _losses(ddp_runs / "rs_b")
    st = json.loads((list_checkpoints(ddp_runs / "rs_a")[-1] / "state.json").read_text())
    assert st["rng_ranks"][0]["torch_cpu"] != st["rng_ranks"][1]["torch_cpu"]  # own dropout


@pytest.mark.subprocess
def test_resume_with_another_number_of_processes_is_refused_or_explicit(ddp_runs, single_eq,
                                                                        digits, tmp_path):
    run = tmp_path / "eq"
    shutil.copytree(ddp_runs / "eq", run)
    shutil.rmtree(list_checkpoints(run)[-1])  # resume from step 3 of the 2-process run
    cfg = TrainConfig(**CFG_EQ)
    with pytest.raises(InputError, match="written by 2 process.*--allow-world-change"):
        train(cfg, run, resume=True, dataset=digits, progress=False)
    train(cfg, run, resume=True, dataset=digits, progress=False, allow_world_change=True)
    assert _max_abs_diff(_tensors(run), _tensors(single_eq),
                         files=("model.safetensors", "ema.safetensors")) < WEIGHT_ATOL


@pytest.mark.subprocess
def test_sharded_bpd_is_the_same_for_one_and_two_ranks(ddp_runs, digits):
    """The one estimator shares batches out by ownership: both ranks make every batch's draws
    from the one generator and only the owner calls the network, so 2 ranks give the numbers
    of 1 process to the last bit, for both methods and both proposals inside a stratum."""
    got = json.loads((ddp_runs / "bpd.json").read_text())
    den = load_denoiser(ddp_runs / "eq", verbose=False).denoiser
    x = digits.test[:BPD_N]
    for method, q in BPD_CASES:
        key = f"{method}/{q}"
        plain = negative_elbo_bpd(den, x, method=method, batch_size=BPD_BATCH, seed=5,
                                  proposal=q, strata=5).as_dict()
        assert got[key] == plain, key
    assert got["stratified/uniform"] != got["stratified/weight"]


@pytest.mark.subprocess
def test_eval_samples_on_two_ranks_are_the_samples_of_one_process(ddp_runs):
    two = torch.load(ddp_runs / "eval_samples.pt")
    res, one = eval_samples(load_denoiser(ddp_runs / "eq", verbose=False), **EVAL_SAMPLES)
    assert torch.equal(two, one) and one.shape == (20, 1, 8, 8)
    assert len(torch.unique(one.flatten(1), dim=0)) == 20  # chunks differ
    assert res["chunk"] == 8 and "fd" in res


@pytest.mark.subprocess
def test_sample_under_torchrun_gives_the_samples_of_one_process(ddp_runs, tmp_path):
    """10 samples in chunks of 4: rank 0 draws chunks 0 and 2, rank 1 chunk 1; gathered in order
    they equal one process's samples exactly."""
    args = [str(ddp_runs / "eq"), "--batch-size", "4", "--steps", "8", "--seed", "3",
            "--device", "cpu", "--no-progress"]
    # torchrun's parser takes "--n" for an ambiguous prefix of its own flags: --num-samples
    _ok(torchrun(["-m", "ddpmkit", "sample", *args, "--num-samples", "10",
                  "--out", str(tmp_path / "two.npz")]))
    assert cli_main(["sample", *args, "--n", "10", "--out", str(tmp_path / "one.npz")]) == 0
    two, one = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert two["images"].shape == (10, 1, 8, 8)
    assert np.array_equal(two["images"], one["images"])
    assert json.loads(str(two["meta"])) == json.loads(str(one["meta"]))
    assert len(np.unique(one["images"].reshape(10, -1), axis=0)) == 10  # chunks differ


@pytest.mark.subprocess
def test_eval_under_torchrun_gives_the_numbers_of_one_process(eval_run, tmp_path):
    """`torchrun -m ddpmkit eval --bpd stratified --fd`: 40 examples in batches of 8 (rank 0
    evaluates batches 0, 2, 4, rank 1 batches 1, 3) and 20 samples in chunks of 8 (rank 0
    draws chunks 0 and 2, rank 1 chunk 1). The stored JSON equals one process's to the last
    bit: each batch meets the same draws (both ranks run the one generator through every
    batch) and each chunk the same seed, so the samples, and their FD, are the same."""
    run = _copy(eval_run, tmp_path)
    args = [str(run), "--bpd", "stratified", "--strata", "4", "--limit", "40",
            "--batch-size", "8", "--fd", "--sample-batch-size", "8", "--steps", "3",
            "--sampler", "ddim", "--seed", "3", "--device", "cpu", "--no-progress"]
    # --num-samples: torchrun's parser takes "--n" for an ambiguous prefix of its own flags
    out = _ok(torchrun(["-m", "ddpmkit", "eval", *args, "--num-samples", "20"]))
    assert out.count("test bits/dim:") == 1 and out.count("samples (ddim") == 1  # rank 0 only
    two = _eval_files(run)
    assert cli_main(["eval", *args, "--n", "20"]) == 0
    one = _eval_files(run)
    assert sorted(one) == ["bpd_stratified_s4x1_weight_test_n40_seed3_step0000002_ema.json",
                           "samples_ddim_3_clip_n20_c8_seed3_step0000002_ema.json"]
    assert two == one
    # ... and those of negative_elbo_bpd, which one process has always used
    bpd = one["bpd_stratified_s4x1_weight_test_n40_seed3_step0000002_ema.json"]
    assert bpd["bpd"] == _plain_bpd(run, 40, method="stratified", strata=4, seed=3,
                                    batch_size=8, max_batch=4096).bpd
    assert one["samples_ddim_3_clip_n20_c8_seed3_step0000002_ema.json"]["fd"] > 0


@pytest.mark.subprocess
def test_exact_eval_under_torchrun_is_one_process_and_written_by_rank_zero(eval_run, tmp_path):
    """--bpd exact on 20 examples in batches of 6 (4 batches, 2 per rank; 4 t per network
    call): the numbers of one process, bit for bit, and one file written, by rank 0."""
    run = _copy(eval_run, tmp_path)
    args = ["eval", str(run), "--bpd", "exact", "--limit", "20", "--batch-size", "6",
            "--max-batch", "24", "--device", "cpu", "--no-progress", "--json"]
    logs = tmp_path / "logs"
    logs.mkdir()
    _ok(torchrun([WORKER, "cli", str(logs), *args]))
    two = _eval_files(run)
    assert cli_main(args) == 0
    one = _eval_files(run)
    assert two == one and len(one) == 1
    plain = _plain_bpd(run, 20, method="exact", seed=0, batch_size=6, max_batch=24)
    (bpd,) = one.values()
    assert (bpd["bpd"], bpd["se_bpd"], bpd["by_t_bpd"]) == (plain.bpd, plain.se_bpd,
                                                           plain.by_t_bpd)
    rec = _cli_records(logs)
    assert rec[0]["code"] == rec[1]["code"] == 0
    mine = [w for w in rec[0]["writes"] if w.startswith(str(run))]
    assert [w for w in mine if not w.endswith(".tmp")] == [str(run / "eval" / next(iter(one)))]
    assert not [w for w in rec[1]["writes"] if w.startswith(str(run))]


@pytest.mark.subprocess
def test_eval_under_torchrun_ends_every_rank_with_one_exit_code(eval_run, tmp_path):
    """Rank 0 cannot store its result (a folder has the file's name): it reports that in one
    line and exits 2, and rank 1, which writes nothing, exits 2 as well."""
    run = _copy(eval_run, tmp_path)
    args = ["eval", str(run), "--bpd", "stratified", "--strata", "2", "--limit", "4",
            "--device", "cpu", "--no-progress", "--json"]
    assert cli_main(args) == 0
    (name,) = _eval_files(run)
    (run / "eval" / name).mkdir(parents=True)
    logs = tmp_path / "logs"
    logs.mkdir()
    res = torchrun([WORKER, "cli", str(logs), *args])
    assert res.returncode != 0
    rec = _cli_records(logs)
    assert rec[0]["code"] == rec[1]["code"] == 2, rec
    assert res.stdout.count("ddpmkit eval: error:") == 1


def test_eval_help_names_the_torchrun_spelling_of_n(capsys):
    from ddpmkit.cli import build_parser

    p = build_parser()
    assert p.parse_args(["eval", "r", "--num-samples", "7"]).n == 7
    with pytest.raises(SystemExit):
        p.parse_args(["eval", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--n N, --num-samples N" in text and "--num-samples under torchrun" in text
    sig = inspect.signature(eval_samples).parameters
    assert p.parse_args(["eval", "r"]).sample_batch_size == sig["chunk"].default


@pytest.mark.subprocess
def test_a_crashing_rank_ends_the_job_instead_of_hanging_it(tmp_path):
    """Rank 1 raises while rank 0 waits in a barrier (whose own time-out is 120 s here):
    torchrun stops rank 0 and exits non-zero well inside the launch time-out."""
    res = torchrun([WORKER, "crash", str(tmp_path)], timeout=LAUNCH_TIMEOUT_S)
    assert res.returncode != 0
    assert "rank 1 fails on purpose" in res.stdout


@pytest.mark.subprocess
@pytest.mark.slow
def test_a_hanging_rank_is_cut_off_by_the_collective_timeout(tmp_path):
    """Rank 1 sleeps forever; rank 0's barrier fails after DDPMKIT_DIST_TIMEOUT_S = 5 s, and
    torchrun then stops rank 1: the job ends with an error instead of waiting an hour."""
    res = torchrun([WORKER, "hang", str(tmp_path)], timeout=LAUNCH_TIMEOUT_S,
                   DDPMKIT_DIST_TIMEOUT_S="5")
    assert res.returncode != 0


@pytest.mark.subprocess
@pytest.mark.slow
def test_cli_train_under_torchrun_resumes_exactly(tmp_path):
    """`torchrun -m ddpmkit train`, then the newest checkpoint lost and `--resume`: same bits;
    resuming it with one process is refused with a clear message (exit 2)."""
    run = tmp_path / "run"
    args = ["-m", "ddpmkit", "train", "--data", "digits", "--out", str(run), "--steps", "4",
            "--batch-size", "8", "--T", "20", "--checkpoint-every", "2", "--sample-every", "0",
            "--log-every", "1", "--warmup-steps", "0", "--device", "cpu", "--no-progress"]
    _ok(torchrun(args))
    full = _tensors(run)
    shutil.rmtree(list_checkpoints(run)[-1])
    _ok(torchrun([*args, "--resume"]))
    again = _tensors(run)
    for f in FILES:
        for k in full[f]:
            assert torch.equal(full[f][k], again[f][k]), (f, k)
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == [
        1, 2, 3, 4]
    shutil.rmtree(list_checkpoints(run)[-1])
    rc = cli_main(["train", "--out", str(run), "--resume", "--device", "cpu", "--no-progress"])
    assert rc == 2


def test_batch_not_divisible_by_the_processes_is_refused(digits, tmp_path):
    with pytest.raises(InputError, match="not divisible by the 2 processes"):
        train(TrainConfig(**CFG_EQ | {"batch_size": 15}), tmp_path / "r", dataset=digits,
              dist=Dist(rank=0, world=2, backend="gloo"), progress=False)


def test_init_from_env_without_rank_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(InputError, match="launch with torchrun"):
        init_from_env("cpu")


def test_single_process_needs_no_process_group(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    dist, device = init_from_env("cpu")
    assert (dist.world, dist.rank, device) == (1, 0, "cpu")
    x = torch.arange(3)
    assert dist.all_gather(x) is x and torch.equal(dist.all_gather_rows(x)[0], x)

