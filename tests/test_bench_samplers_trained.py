"""benchmarks/bench_samplers_trained.py --quick on tiny trained runs: it fills every cell, scores
them as the demo does, caches the samples (a rerun reuses them) and prints the tables."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ddpmkit.samplers import SAMPLER_NAMES
from ddpmkit.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "norm_groups": 4, "mid_attn": False}


def load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_samplers_trained", ROOT / "benchmarks" / "bench_samplers_trained.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bench_trained")
    train(TrainConfig(data="digits", steps=4, batch_size=16, net_overrides=TINY, T=20,
                      sample_every=0, log_every=2, warmup_steps=1, checkpoint_every=4),
          d / "digits", progress=False)
    train(TrainConfig(data="ring", steps=4, batch_size=32, T=20, sample_every=0, log_every=2,
                      warmup_steps=1, net_overrides={"hidden": 16, "depth": 2},
                      checkpoint_every=4), d / "ring", progress=False)
    return d


def test_quick_run_fills_every_cell_and_reuses_the_cache(runs, capsys):
    bench = load_bench()
    out = runs / "res.json"
    argv = ["--quick", "--digits-run", str(runs / "digits"), "--ring-run", str(runs / "ring"),
            "--cache", str(runs / "cache"), "--json", str(out), "--plot", str(runs / "p.png"),
            "--samplers", "ddim,heun,unipc", "--digits-n", "16", "--ring-n", "64"]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    d, r = res["digits"], res["ring"]
    # 3 samplers x 2 spacings x budgets (5, 10) + the T-step ancestral reference
    assert len(d["rows"]) == 3 * 2 * 2 + 1 and len(r["rows"]) == 3 * 2 * 2
    ref = d["reference"]
    assert ref["network_calls"] == 20 and d["criterion"]["reference_fd"] == ref["fd"]
    heun = [x for x in d["rows"] if x["sampler"] == "heun" and x["budget"] == 10]
    assert all(x["network_calls"] == 9 for x in heun)  # 2 steps - 1 calls fit the budget
    assert all(x["fd"] > 0 and sum(x["class_counts"]) == 16 for x in d["rows"])
    assert all(x["sw2"] > 0 for x in r["rows"]) and r["floor_std"] >= 0
    assert (runs / "p.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "| sampler | spacing | 5 calls | 10 calls |" in printed and "criterion" in printed
    n_cached = len(list((runs / "cache").glob("*.npz")))
    assert n_cached == len(d["rows"]) + len(r["rows"])
    # a rerun only scores the cached samples again: same numbers, no new files
    assert bench.main(argv) == 0
    res2 = json.loads(out.read_text())
    assert [x["fd"] for x in res2["digits"]["rows"]] == [x["fd"] for x in d["rows"]]
    assert [x["sw2"] for x in res2["ring"]["rows"]] == [x["sw2"] for x in r["rows"]]
    assert len(list((runs / "cache").glob("*.npz"))) == n_cached


def test_every_sampler_is_benchmarked_by_default():
    args = load_bench().parse_args([])
    assert args.samplers == SAMPLER_NAMES and args.digits_n == 1797 and args.ring_n == 10_000
    assert args.digits_budgets == (10, 20, 50, 100) and 1000 in args.ring_budgets
