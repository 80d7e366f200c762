"""benchmarks/time_to_quality.py in its smoke mode: every installed library trains for a second,
samples and is scored, and the JSON has the table's fields (the 3-minute run is `make
bench-quality`)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_quality.py"


def _bench():
    if "bench_time_to_quality" not in sys.modules:  # dataclasses look their module up there
        spec = importlib.util.spec_from_file_location("bench_time_to_quality", BENCH)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_time_to_quality"]


def test_smoke_run_writes_one_row_per_library(tmp_path):
    bench = _bench()
    libs = ["ddpmkit"] + [lib for lib, mod in (("denoising-diffusion-pytorch",
                                                "denoising_diffusion_pytorch"),
                                               ("diffusers", "diffusers"))
                          if importlib.util.find_spec(mod) is not None]
    out = tmp_path / "ttq.json"
    assert bench.main(["--minutes", "0.01", "--n", "32", "--bpd-limit", "16", "--libraries",
                       *libs, "--out", str(out), "--workdir", str(tmp_path)]) == 0
    res = json.loads(out.read_text())
    assert [r["name"] for r in res["runs"]] == libs
    for r in res["runs"]:
        assert r["train_steps"] >= 1 and r["n"] == 32 and r["fd"] > 0
        assert not r["fd_comparable"] and len(r["class_counts"]) == 10
    ours = res["runs"][0]
    assert ours["bpd_method"] == "stratified" and ours["bpd_n"] == 16 and ours["test_bpd"] > 0
    assert ours["sampler"].startswith("dpmpp2m_sde, 20 network calls")
    assert "elbo weighting" in ours["objective"] and "logsnr_linear" in ours["objective"]


@pytest.mark.parametrize("step,want", [(0, 0.0), (250, 0.5e-4), (500, 1e-4), (4500, 0.5e-4),
                                       (8500, 0.0), (9000, 0.0)])
def test_diffusers_recipe_lr_is_its_warmup_then_cosine(step, want):
    bench = _bench()
    r = bench.diffusers_recipe(1347)  # 100 epochs of ceil(1347 / 16) = 85 batches
    assert r.horizon == 8500
    assert bench.lr_at(r, step) == pytest.approx(want, abs=1e-12)


def test_shared_recipe_is_ddpmkits_warmup():
    bench = _bench()
    r = bench.shared_recipe()
    assert bench.lr_at(r, 0) == pytest.approx(r.lr / r.warmup)
    assert bench.lr_at(r, r.warmup + 5) == r.lr
