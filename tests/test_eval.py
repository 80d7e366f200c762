"""`ddpmkit eval` and ddpmkit.evaluate: reproducible bits/dim with provenance, the exact vs
stratified comparison, stored results, FD and sliced W2, and one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ddpmkit.cli import build_parser
from ddpmkit.errors import InputError
from ddpmkit.evaluate import (
    bucket_bpd,
    compare_bpd,
    cost_per_unit_variance,
    eval_bpd,
    eval_name,
    eval_samples,
    load_evals,
    save_eval,
)
from ddpmkit.train import TrainConfig, load_denoiser, train

TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "norm_groups": 4, "mid_attn": False}
PROVENANCE = ("checkpoint", "step", "ema", "model_sha256", "data", "split", "method", "seed", "n",
              "batch_size", "max_batch")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny digits run: T = 50, 20 steps (quality is beside the point here). x0 output on the
    native cosine chain: its L_t spans orders of magnitude between examples and t, the case the
    stratified estimator's cost test below is about (a v output on a log-SNR-linear chain has
    flat L_t, where 6 draws cannot beat 50 on x_t noise alone)."""
    d = tmp_path_factory.mktemp("eval") / "run"
    cfg = TrainConfig(data="digits", steps=20, batch_size=32, net_overrides=TINY, T=50,
                      parameterization="x0", schedule="cosine", logsnr_max=None,
                      logsnr_min=None,
                      sample_every=0, log_every=5, warmup_steps=2, checkpoint_every=20, lr=3e-3)
    train(cfg, d, progress=False)
    return d


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddpmkit", "eval", *args, "--device", "cpu"],
                          capture_output=True, text=True)


def test_cli_defaults_are_the_demo_settings():
    """`ddpmkit eval --bpd exact` reproduces the demo's metrics.json only if it draws the same
    noise: same seed and the same estimator as the demo's eval_bpd call (one set of defaults,
    those of ELBOEstimator)."""
    from ddpmkit.cli.eval import estimator_from_args
    from ddpmkit.likelihood import ELBOEstimator

    args = build_parser().parse_args(["eval", "runs/x", "--bpd", "exact"])
    assert args.seed == 0
    assert estimator_from_args(args, "exact") == ELBOEstimator(method="exact")


@pytest.mark.subprocess
def test_exact_bpd_cli_reproduces_the_api_and_records_provenance(run_dir):
    loaded = load_denoiser(run_dir, verbose=False)
    api = eval_bpd(loaded, method="exact", limit=30)
    p = cli(str(run_dir), "--bpd", "exact", "--limit", "30", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)["bpd"]
    assert out["bpd"] == pytest.approx(api["bpd"], rel=1e-9)
    assert out["se_bpd"] == pytest.approx(api["se_bpd"], rel=1e-9)
    for key in PROVENANCE:
        assert key in out, key
    assert out["model_sha256"] == loaded.model_sha256 and out["ema"] is True
    assert out["n"] == 30 and out["network_calls_per_example"] == 50
    t = out["terms_bpd"]
    assert out["bpd"] == pytest.approx(t["prior"] + t["consistency"] + t["decoder"], rel=1e-9)
    assert out["rate_bpd"] == pytest.approx(t["prior"] + t["consistency"], rel=1e-9)
    assert len(out["by_t_bpd"]) == 51
    assert sum(b["bpd"] for b in out["consistency_by_bucket"]) == pytest.approx(
        t["consistency"], rel=1e-9)
    stored = json.loads(Path(out["file"]).read_text())
    assert stored["bpd"] == out["bpd"] and Path(out["file"]).parent == run_dir / "eval"


@pytest.mark.subprocess
def test_stratified_agrees_with_exact_within_3_se_and_is_compared(run_dir):
    exact = cli(str(run_dir), "--bpd", "exact", "--limit", "120", "--json")
    strat = cli(str(run_dir), "--bpd", "stratified", "--strata", "10", "--limit", "120", "--json")
    assert exact.returncode == 0 and strat.returncode == 0, exact.stderr + strat.stderr
    e, s = json.loads(exact.stdout)["bpd"], json.loads(strat.stdout)
    assert s["bpd"]["network_calls_per_example"] == 11
    c = s["comparison"]  # the exact result of the same checkpoint and n was stored
    assert c["bpd_exact"] == pytest.approx(e["bpd"])
    assert c["z"] <= 3.0, c
    assert c["calls_ratio_equal_se"] == pytest.approx(
        50 * e["se_bpd"] ** 2 / (11 * s["bpd"]["se_bpd"] ** 2), rel=1e-9)


@pytest.mark.subprocess
def test_human_output(run_dir):
    p = cli(str(run_dir), "--bpd", "stratified", "--strata", "5", "--limit", "20", "--no-save")
    assert p.returncode == 0, p.stderr
    assert "test bits/dim:" in p.stdout and "rate" in p.stdout and "stored" not in p.stdout


@pytest.mark.subprocess
def test_fd_records_its_settings(run_dir):
    p = cli(str(run_dir), "--fd", "--n", "40", "--steps", "3", "--sampler", "ddim", "--json",
            "--seed", "3")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert "bpd" not in out
    s = out["samples"]
    assert math.isfinite(s["fd"]) and s["fd"] > 0 and s["fd_comparable"] is False
    assert sum(s["class_counts"]) == 40
    for key in ("n", "sampler", "steps", "clip", "seed", "checkpoint", "model_sha256", "ema"):
        assert key in s, key
    assert (s["sampler"], s["steps"], s["seed"], s["clip"]) == ("ddim", 3, 3, "clip")
    assert Path(s["file"]).name.startswith("samples_ddim_3_clip_n40_seed3")


@pytest.mark.subprocess
def test_sliced_w2_for_a_2d_toy(tmp_path):
    d = tmp_path / "ring"
    cfg = TrainConfig(data="ring", steps=30, batch_size=64, T=50, sample_every=0,
                      net_overrides={"hidden": 32, "depth": 2}, checkpoint_every=30)
    train(cfg, d, progress=False)
    p = cli(str(d), "--sw2", "--n", "300", "--steps", "10", "--json")
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)["samples"]
    assert s["sliced_w2"] > s["sliced_w2_floor"] > 0 and s["clip"] == "none"
    p = cli(str(d), "--fd")
    assert p.returncode == 2 and "--sw2" in p.stderr and p.stderr.count("\n") == 1


@pytest.mark.subprocess
@pytest.mark.parametrize("args, needle", [
    (["--sw2"], "--sw2 is for 2-D"),
    (["--fd", "--steps", "51"], "exceeds the model's T = 50"),
    (["--bpd", "fast"], "invalid choice"),
    (["--n", "0", "--fd"], ">= 1"),
])
def test_bad_input_is_one_line_exit_2(run_dir, args, needle):
    p = cli(str(run_dir), *args)
    assert p.returncode == 2, p.stdout + p.stderr
    assert needle in p.stderr and p.stderr.count("\n") == 1


@pytest.mark.subprocess
def test_not_a_run_dir(tmp_path):
    p = cli(str(tmp_path))
    assert p.returncode == 2 and "run directory" in p.stderr


def test_bucket_bpd_partitions_2_to_T():
    by_t = [0.0, 0.0] + [float(t) for t in range(2, 101)]  # T = 100
    b = bucket_bpd(by_t, buckets=7)
    assert b[0]["t_lo"] == 2 and b[-1]["t_hi"] == 100
    assert all(x["t_hi"] + 1 == y["t_lo"] for x, y in zip(b, b[1:]))
    assert sum(x["bpd"] for x in b) == pytest.approx(sum(range(2, 101)))
    assert bucket_bpd([0.0, 0.0]) == []


def _res(method, bpd, se, calls, n=100, seconds=1.0, sha="abc"):
    return {"method": method, "bpd": bpd, "se_bpd": se, "network_calls_per_example": calls,
            "n": n, "seconds": seconds, "model_sha256": sha, "strata": 10, "per_stratum": 1,
            "split": "test", "seed": 0, "step": 5, "ema": True, "proposal": "weight"}


def test_cost_at_equal_se_is_calls_times_variance():
    """SE = sigma / sqrt(n): reaching SE s costs calls * sigma^2 / s^2, so the ratio at equal
    SE is (calls_e * n_e * se_e^2) / (calls_s * n_s * se_s^2)."""
    e, s = _res("exact", 1.00, 0.01, 1000, seconds=100.0), _res("stratified", 1.02, 0.02, 51,
                                                              seconds=6.0)
    c = compare_bpd(e, s)
    assert c["calls_ratio_equal_se"] == pytest.approx(1000 * 1e-4 / (51 * 4e-4))
    assert c["seconds_ratio_equal_se"] == pytest.approx(100 * 1e-4 / (6 * 4e-4))
    assert c["z"] == pytest.approx(1.0) and c["diff_bpd"] == pytest.approx(0.02)
    assert cost_per_unit_variance(e)["calls"] == pytest.approx(1000 * 100 * 1e-4)
    with pytest.raises(InputError, match="different checkpoints"):
        compare_bpd(e, _res("stratified", 1.0, 0.02, 51, sha="other"))
    with pytest.raises(InputError, match="needs an exact result"):
        compare_bpd(s, e)


def test_save_and_load_evals(tmp_path):
    a = _res("exact", 1.0, 0.01, 50) | {"limit": None, "x": float("nan")}
    b = _res("stratified", 1.0, 0.01, 11) | {"limit": 30}
    pa, pb = save_eval(tmp_path, a), save_eval(tmp_path, b)
    assert pa != pb and pa.name == eval_name(a) + ".json"
    assert "_s10x1_weight_" in pb.name and "_n100_" in pb.name
    got = load_evals(tmp_path)
    assert [g["method"] for g in got] == ["exact", "stratified"]
    assert got[0]["x"] is None  # strict JSON: NaN stored as null
    (tmp_path / "eval" / "broken.json").write_text("{")
    assert len(load_evals(tmp_path)) == 2


def test_eval_samples_names_differ_by_setting(run_dir):
    loaded = load_denoiser(run_dir, verbose=False)
    r1, x = eval_samples(loaded, n=20, steps=2, sampler="ddim")
    r2, _ = eval_samples(loaded, n=20, steps=2, sampler="ddim", seed=1)
    assert x.shape == (20, 1, 8, 8) and eval_name(r1) != eval_name(r2)


def test_stratified_is_cheaper_than_exact_at_equal_se(run_dir):
    """Cost at equal SE is calls x n x se^2: with 5 strata (6 calls vs T = 50) the stratified
    estimate should keep at least half of its raw 8.3x saving, i.e. its per-example variance
    should stay within 2x of exact's (the spread between examples)."""
    loaded = load_denoiser(run_dir, verbose=False)
    e = eval_bpd(loaded, method="exact", limit=120)
    s = eval_bpd(loaded, method="stratified", strata=5, limit=120)
    c = compare_bpd(e, s)
    assert c["z"] <= 3.0
    assert c["calls_ratio_equal_se"] >= 0.5 * 50 / 6, c


@pytest.mark.subprocess
def test_uniform_proposal_is_recorded_and_stored_apart(run_dir):
    """q(t) inside a stratum is part of the result's provenance and of its file name."""
    outs = {}
    for proposal in ("uniform", "weight"):
        p = cli(str(run_dir), "--bpd", "stratified", "--strata", "5", "--limit", "60",
                "--proposal", proposal, "--json")
        assert p.returncode == 0, p.stderr
        outs[proposal] = json.loads(p.stdout)["bpd"]
    assert outs["uniform"]["proposal"] == "uniform" and outs["weight"]["proposal"] == "weight"
    assert outs["uniform"]["file"] != outs["weight"]["file"]
    assert outs["uniform"]["bpd"] != outs["weight"]["bpd"]
