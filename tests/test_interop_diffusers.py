"""diffusers interop, both ways, offline, against the installed diffusers: ``ddpmkit export``
writes a folder that UNet2DModel / DDPMScheduler / DDPMPipeline load and whose x0 equals
ddpmkit's x0_hat; ``ddpmkit eval --diffusers`` evaluates such a folder (or one diffusers wrote)
with ddpmkit's ELBO, and the round trip gives the run's own bits/dim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from ddpmkit.errors import InputError  # noqa: E402
from ddpmkit.evaluate import eval_bpd  # noqa: E402
from ddpmkit.interop import (  # noqa: E402
    diffusers_unet_config,
    diffusers_unet_state_dict,
    export_diffusers,
    export_refusal,
    float32_chain,
    load_diffusers,
    step_rotation,
)
from ddpmkit.nets import UNet, UNetConfig, preset  # noqa: E402
from ddpmkit.nets.embeddings import sinusoidal_embedding  # noqa: E402
from ddpmkit.schedules import from_betas, make_schedule  # noqa: E402
from ddpmkit.train import TrainConfig, load_denoiser, train  # noqa: E402

TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "norm_groups": 4, "mid_attn": True,
        "attn_levels": (1,)}


def _train(d: Path, **kw) -> Path:
    cfg = TrainConfig(**{"data": "digits", "steps": 10, "batch_size": 32, "net_overrides": TINY,
                         "fourier_features": "none", "sample_every": 0, "log_every": 5,
                         "warmup_steps": 2, "checkpoint_every": 10, "lr": 3e-3, **kw})
    train(cfg, d, progress=False)
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """eps on the default chain (T = 1000, logsnr_linear: the positional time embedding) and v
    on T = 50 (the learned embedding), a few steps each."""
    root = tmp_path_factory.mktemp("interop")
    return {"eps": _train(root / "eps", parameterization="eps"),
            "v": _train(root / "v", parameterization="v", T=50)}


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exported")
    return {k: Path(export_diffusers(r, root / k)["out"]) for k, r in runs.items()}


def _x_and_k(T: int, n: int = 48):
    g = torch.Generator().manual_seed(0)
    k = torch.cat([torch.arange(6), torch.randint(0, T, (n - 12,), generator=g),
                   torch.arange(T - 6, T)])
    return torch.randn(n, 1, 8, 8, generator=g), k


def _unet(folder: Path):
    return diffusers.UNet2DModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False).eval()


# ---- export -> diffusers -----------------------------------------------------------------
@pytest.mark.parametrize("param,embedding", [("eps", "positional"), ("v", "learned")])
def test_exported_unet_x0_equals_ddpmkit_x0_hat(runs, exported, param, embedding):
    """UNet2DModel(x_t, k) converted by the scheduler's prediction_type equals ddpmkit's
    x0_hat(x_t, t = k + 1) to float32 rounding; the raw outputs to ~1e-6."""
    out = exported[param]
    info = json.loads((out / "ddpmkit_export.json").read_text())
    assert info["time_embedding"] == embedding and info["parameterization"] == param
    unet = _unet(out)
    sch = diffusers.DDPMScheduler.from_pretrained(out / "scheduler", clip_sample=False)
    assert sch.config.prediction_type == {"eps": "epsilon", "v": "v_prediction"}[param]
    den = load_denoiser(runs[param], verbose=False).denoiser
    # every tensor UNet2DModel has is in the file, and nothing else
    with open(out / "unet" / "config.json") as f:
        want = diffusers.UNet2DModel.from_config(json.load(f)).state_dict().keys()
    from safetensors import safe_open

    with safe_open(str(out / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(want)
    x, k = _x_and_k(den.T)
    with torch.no_grad():
        raw_d = unet(x, k).sample
        x0_d = torch.cat([sch.step(raw_d[i:i + 1], int(k[i]), x[i:i + 1]).pred_original_sample
                          for i in range(len(k))])
        raw_o, x0_o = den.raw(x, k + 1), den.x0_hat(x, k + 1)
    assert (raw_d - raw_o).abs().max().item() <= 1e-5
    # x0 from eps at t = T divides by sqrt(alpha_bar_T) ~ 0.01: |x0| ~ 100 there, hence rtol
    torch.testing.assert_close(x0_d, x0_o, rtol=1e-5, atol=1e-4)
    # diffusers' betas are ddpmkit's rounded to float32
    assert torch.equal(sch.betas, den.schedule.beta[1:].float())


def test_export_writes_a_ddpm_pipeline_that_samples(exported):
    pipe = diffusers.DDPMPipeline.from_pretrained(exported["eps"], low_cpu_mem_usage=False)
    pipe.set_progress_bar_config(disable=True)
    img = pipe(batch_size=2, num_inference_steps=5, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (2, 8, 8, 1) and (img >= 0).all() and (img <= 1).all()
    # the trailing spacing starts at ddpmkit's t = T (diffusers' k = T - 1), as ddpmkit does
    assert int(pipe.scheduler.timesteps[0]) == 999


@pytest.mark.parametrize("cfg", [
    dict(ch=8, ch_mult=(1, 2, 2), num_res_blocks=2, attn_levels=(0, 2), norm_groups=4),
    dict(ch=16, ch_mult=(1, 1), num_res_blocks=1, attn_levels=(0, 1), num_heads=2,
         norm_groups=8, mid_attn=True),
    dict(ch=8, ch_mult=(1, 1), num_res_blocks=1, mid_attn=False, norm_groups=4,
         conv3x3="winograd"),
    dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, norm_groups=4, T=200, max_period=500.0),
], ids=["three-levels", "two-heads", "no-mid-attn", "T200"])
def test_weight_map_covers_the_layouts(cfg):
    """Random weights (every tensor perturbed), mapped onto UNet2DModel: the same function."""
    torch.manual_seed(0)
    c = UNetConfig(in_channels=2, **cfg)
    net = UNet(c).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    shape = (2, 8, 16)
    emb = "positional" if c.T == 1000 else "learned"
    dcfg = diffusers_unet_config(c, shape, emb)
    theirs = diffusers.UNet2DModel.from_config(dcfg).eval()
    theirs.load_state_dict(diffusers_unet_state_dict(c, net.state_dict(), emb), strict=True)
    x = torch.randn(5, *shape)
    k = torch.tensor([0, 1, c.T // 2, c.T - 2, c.T - 1])
    with torch.no_grad():
        torch.testing.assert_close(theirs(x, k).sample, net(x, k + 1), rtol=1e-4, atol=1e-5)


def test_step_rotation_moves_the_sinusoids_one_step():
    t = torch.arange(1, 1000)
    emb = sinusoidal_embedding(t, 33, 1000).double()  # odd: the zero column stays
    nxt = sinusoidal_embedding(t + 1, 33, 1000).double()
    # float32 arguments t * w near 1000 carry ~6e-5 of rounding either way
    torch.testing.assert_close(emb @ step_rotation(33).T, nxt, rtol=0, atol=2e-4)


@pytest.mark.parametrize("change,why", [
    ({"parameterization": "mu"}, "'mu' output has no diffusers prediction_type"),
    ({"parameterization": "edm"}, "'edm' output"),
    ({"fourier_frequencies": (8.0, 16.0)}, "Fourier input features"),
    ({"num_heads": 2, "ch_mult": (1, 2), "attn_levels": (0,)}, "one head size"),
    ({"shape": (1, 6, 6), "ch_mult": (1, 2, 2)}, "do not halve exactly"),
    ({"ch_mult": (2, 2)}, "first level's width"),
])
def test_what_cannot_map_is_refused_naming_why(change, why):
    change = dict(change)
    param = change.pop("parameterization", "eps")
    shape = change.pop("shape", (1, 8, 8))
    cfg = preset("digits", **{"ch": 8, "norm_groups": 4, **change})
    msg = export_refusal(cfg, param, shape)
    assert msg is not None and why in msg
    assert export_refusal(preset("mlp2d"), "eps", (2,)).startswith("only U-Net runs")
    assert export_refusal(preset("digits"), "v", (1, 8, 8)) is None


def test_float32_copy_of_the_chain_is_checked():
    ok = float32_chain(make_schedule("logsnr_linear", 1000, logsnr_max=7.7, logsnr_min=-9.0))
    assert ok["valid"] and ok["max_abs_err_log_snr"] < 1e-3
    assert "rounds to 1 in float32" in float32_chain(from_betas([0.5, 1 - 1e-9]))["why"]
    assert "is 0 in float32" in float32_chain(from_betas([1e-12, 0.5]))["why"]


def test_export_never_overwrites(runs, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        export_diffusers(runs["v"], tmp_path / "x")
    assert (tmp_path / "x" / "keep").read_text() == "mine"


# ---- diffusers -> ddpmkit eval ------------------------------------------------------------
@pytest.mark.parametrize("param,method", [("v", "exact"), ("eps", "stratified")])
def test_round_trip_gives_the_runs_bits_per_dim(runs, exported, param, method):
    """ddpmkit run -> diffusers folder -> ddpmkit eval: the same -ELBO as the run's own, term
    by term, on the same data and seed (float32 rounding of the betas and of the net)."""
    ours = eval_bpd(load_denoiser(runs[param], verbose=False), method=method, limit=64)
    loaded = load_diffusers(exported[param], data="digits")
    theirs = eval_bpd(loaded, method=method, limit=64, save_mmse=False)
    assert theirs["bpd"] == pytest.approx(ours["bpd"], rel=1e-6)
    for k, v in ours["terms_bpd"].items():
        assert theirs["terms_bpd"][k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
    assert theirs["network_calls_per_example"] == ours["network_calls_per_example"]


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory) -> Path:
    """A UNet2DModel with diffusers' own defaults (flip_sin_to_cos, its block layout) and a
    DDPMScheduler on its float32 linear chain, saved with save_pretrained."""
    d = tmp_path_factory.mktemp("native")
    torch.manual_seed(0)
    diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
    ).save_pretrained(d / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=40, beta_schedule="linear", beta_start=1e-3,
                            beta_end=0.3).save_pretrained(d / "scheduler")
    return d


def test_diffusers_folder_is_a_denoiser_with_the_timestep_shift(diffusers_folder):
    loaded = load_diffusers(diffusers_folder, data="digits")
    den = loaded.denoiser
    unet = _unet(diffusers_folder)
    sch = diffusers.DDPMScheduler.from_pretrained(diffusers_folder / "scheduler")
    assert den.T == 40 and den.parameterization == "eps"
    assert den.schedule.beta.dtype == torch.float64
    assert torch.equal(den.schedule.beta[1:], sch.betas.double())  # float32 values, exactly
    x, k = _x_and_k(40, n=16)
    with torch.no_grad():  # ddpmkit's t is diffusers' k + 1
        torch.testing.assert_close(den.eps_hat(x, k + 1), unet(x, k).sample)
    res = eval_bpd(loaded, method="exact", limit=16, save_mmse=False)
    assert res["n"] == 16 and res["network_calls_per_example"] == 40
    assert res["bpd"] == pytest.approx(sum(res["terms_bpd"].values()), rel=1e-9)
    assert res["model_sha256"] == loaded.model_sha256


def test_load_diffusers_refuses_what_it_cannot_evaluate(diffusers_folder, tmp_path):
    import numpy as np

    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, train=np.zeros((4, 3, 8, 8), np.uint8), test=np.zeros((4, 3, 8, 8), np.uint8))
    with pytest.raises(InputError, match="built for 1x8x8"):
        load_diffusers(diffusers_folder, data=str(rgb))
    with pytest.raises(InputError, match="not a diffusers folder"):
        load_diffusers(tmp_path, data="digits")
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(diffusers_folder, bad)
    weights = bad / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".off"))
    with pytest.raises(InputError, match="never loads pickled"):
        load_diffusers(bad, data="digits")
    weights.with_suffix(".off").rename(weights)
    cfg_path = bad / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(cfg | {"variance_type": "learned_range"}))
    with pytest.raises(InputError, match="learned variance"):
        load_diffusers(bad, data="digits")
    cfg_path.write_text(json.dumps(cfg | {"prediction_type": "flow"}))
    with pytest.raises(InputError, match="prediction_type 'flow'"):
        load_diffusers(bad, data="digits")


# ---- the command line ---------------------------------------------------------------------
def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddpmkit", *args, "--device", "cpu"],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.subprocess
def test_cli_export_then_eval_diffusers_round_trip(runs, tmp_path):
    out = tmp_path / "d"
    p = cli("export", str(runs["v"]), str(out), "--format", "diffusers", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["prediction_type"] == "v_prediction"
    a = cli("eval", str(runs["v"]), "--bpd", "exact", "--limit", "40", "--no-save", "--json")
    b = cli("eval", "--diffusers", str(out), "--data", "digits", "--bpd", "exact", "--limit",
            "40", "--json")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ra, rb = json.loads(a.stdout)["bpd"], json.loads(b.stdout)["bpd"]
    assert rb["bpd"] == pytest.approx(ra["bpd"], rel=1e-6)
    assert not (out / "eval").exists()  # a diffusers folder is not written to


@pytest.mark.subprocess
def test_cli_refusals_are_one_line_and_exit_2(tmp_path):
    run = _train(tmp_path / "fourier", T=20, fourier_features="auto")  # the default recipe
    for args, needle in [
        (("export", str(run), str(tmp_path / "o"), "--format", "diffusers"),
         "Fourier input features"),
        (("eval", "--diffusers", str(tmp_path)), "--data"),
        (("eval", str(run), "--data", "digits"), "--data is for --diffusers"),
    ]:
        p = cli(*args)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], p.stderr
    assert not (tmp_path / "o").exists()
