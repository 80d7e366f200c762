"""`ddpmkit equivalence` and `ddpmkit calibrate` as a user runs them."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.subprocess  # every test here starts `python -m ddpmkit`


def run(*args, check=False):
    p = subprocess.run([sys.executable, "-m", "ddpmkit", *args], capture_output=True, text=True,
                       timeout=600)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_equivalence_json_max_rel_diff_below_1e_12(schedule):
    out = json.loads(run("equivalence", "--schedule", schedule, "--T", "1000", "--json",
                         check=True).stdout)
    assert out["max_rel_diff"] <= 1e-12
    assert out["t_checked"] == 999 and len(out["C_t"]) == 1001
    assert out["C_t"][0] is None and out["C_t"][1] is None and out["C_t"][2] > out["C_t"][500]


def test_equivalence_plot_writes_a_png(tmp_path):
    png = tmp_path / "w.png"
    run("equivalence", "--T", "100", "--plot", str(png), check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_calibrate_gaussian_json_rows_have_the_contract_keys(tmp_path):
    out = run("calibrate", "--case", "gaussian", "--T", "100", "--n", "500", "--json",
              "--out", str(tmp_path / "cal.npz"), check=True)
    rows = json.loads(out.stdout)
    assert len(rows) == 6  # linear, cosine x small, large, analytic
    keys = {"schedule", "T", "variance", "true_nll_bpd", "neg_elbo_bpd", "neg_elbo_mc_bpd",
            "neg_elbo_mc_se_bpd", "gap_bpd"}
    for r in rows:
        assert keys <= set(r) and r["variance"] in ("small", "large", "analytic")
        assert abs(r["neg_elbo_mc_bpd"] - r["neg_elbo_bpd"]) <= 3 * r["neg_elbo_mc_se_bpd"]
    assert (tmp_path / "cal.npz").exists()


@pytest.mark.parametrize("args,needle", [
    (["equivalence", "--T", "0"], "--T"),
    (["equivalence", "--schedule", "foo"], "foo"),
    (["equivalence", "--T", "abc"], "abc"),
    (["equivalence", "--T", "10"], "beta_max"),
    (["calibrate", "--case", "nope"], "nope"),
    (["calibrate", "--n", "1"], "--n"),
    (["calibrate", "--out", "/nonexistent/dir/x.npz", "--T", "30", "--n", "50"], "does not exist"),
    (["frobnicate"], "frobnicate"),
])
def test_bad_input_is_one_line_on_stderr_and_exit_2(args, needle):
    p = run(*args)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in p.stderr


def test_help_has_an_example():
    for cmd in ("equivalence", "calibrate"):
        p = run(cmd, "--help", check=True)
        assert "example" in p.stdout and "--seed" in p.stdout and "--json" in p.stdout
