"""The trainer: exact resume, checkpoints, refusal to overwrite, loading for sampling."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from ddpmkit import InputError
from ddpmkit.data import load_dataset
from ddpmkit.train import TrainConfig, list_checkpoints, load_denoiser, train

TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "norm_groups": 4, "mid_attn": False}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _cfg(**kw):
    base = dict(data="digits", steps=12, batch_size=16, checkpoint_every=4, log_every=2,
                sample_every=0, net_overrides=TINY, T=100, warmup_steps=3)
    return TrainConfig(**(base | kw))


def _tensors(run_dir):
    ck = list_checkpoints(run_dir)[-1]
    return {f: load_file(str(ck / f)) for f in ("model.safetensors", "ema.safetensors",
                                                "optim.safetensors")}


@pytest.mark.parametrize("extra", [
    {},
    {"timesteps": "importance", "net_overrides": TINY | {"dropout": 0.2}, "weighting": "elbo"},
])
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, digits, extra):
    cfg = _cfg(**extra)
    if "timesteps" in extra:  # make the importance sampler leave its warm-up inside the run
        cfg = cfg.replace(T=20, steps=16)
    a, b = tmp_path / "a", tmp_path / "b"
    train(cfg, a, progress=False, dataset=digits)
    # b: stop after 6 steps (checkpoint at 4 exists, steps 5-6 are lost), then resume
    train(cfg, b, progress=False, dataset=digits, stop_after=6)
    assert [p.name for p in list_checkpoints(b)] == ["step_0000004"]
    train(cfg, b, resume=True, progress=False, dataset=digits)
    ta, tb = _tensors(a), _tensors(b)
    for f in ta:
        assert ta[f].keys() == tb[f].keys()
        for k in ta[f]:
            assert torch.equal(ta[f][k], tb[f][k]), (f, k)
    steps = [json.loads(line)["step"] for line in (b / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == cfg.steps  # none lost or repeated
    la = (a / "log.jsonl").read_text().splitlines()
    assert [json.loads(x)["loss"] for x in la] == [
        json.loads(x)["loss"] for x in (b / "log.jsonl").read_text().splitlines()]


def test_existing_run_dir_is_refused_without_resume(tmp_path, digits):
    cfg = _cfg(steps=2, checkpoint_every=2)
    train(cfg, tmp_path / "r", progress=False, dataset=digits)
    before = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    with pytest.raises(InputError, match="--resume"):
        train(cfg, tmp_path / "r", progress=False, dataset=digits)
    after = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    assert before == after
    with pytest.raises(InputError, match="other settings"):
        train(cfg.replace(lr=0.5), tmp_path / "r", resume=True, progress=False, dataset=digits)


def test_resume_without_checkpoint_starts_at_step_0(tmp_path, digits):
    cfg = _cfg(steps=4)
    r = train(cfg, tmp_path / "new", resume=True, progress=False, dataset=digits)
    assert r.step == 4


def test_corrupt_newest_checkpoint_is_skipped_on_resume(tmp_path, digits, capsys):
    cfg = _cfg(steps=8)
    run = tmp_path / "r"
    train(cfg, run, progress=False, dataset=digits)
    newest = list_checkpoints(run)[-1]
    data = bytearray((newest / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (newest / "model.safetensors").write_bytes(bytes(data))
    loaded = load_denoiser(run)
    assert loaded.step == 4  # the newest valid one
    assert "sha256" in capsys.readouterr().out


def test_loaded_denoiser_samples_and_is_the_ema(tmp_path, digits):
    from ddpmkit.samplers import sample_ancestral

    run = tmp_path / "r"
    train(_cfg(steps=4), run, progress=False, dataset=digits)
    ema = load_denoiser(run)
    raw = load_denoiser(run, ema=False)
    assert ema.step == 4 and ema.run.data["levels"] == 17
    x = sample_ancestral(ema.denoiser, (3, 1, 8, 8), steps=5, seed=0).x
    assert x.shape == (3, 1, 8, 8) and torch.isfinite(x).all()
    pe = dict(ema.denoiser.net.named_parameters())
    assert any(not torch.equal(p, pe[n]) for n, p in raw.denoiser.net.named_parameters())


def test_config_mismatch_is_detected(tmp_path, digits):
    run = tmp_path / "r"
    train(_cfg(steps=4), run, progress=False, dataset=digits)
    cfg = json.loads((run / "config.json").read_text())
    cfg["net"]["ch"] = 16
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="config.json changed"):
        load_denoiser(run)
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(InputError, match="no checkpoint yet"):
        load_denoiser(run)


def _nan_at_step(monkeypatch, bad_call: int):
    """Make the loss NaN on the bad_call-th training step."""
    import ddpmkit.train.trainer as tr

    real = tr.diffusion_loss
    calls = {"n": 0}

    def loss(*a, **kw):
        out = real(*a, **kw)
        calls["n"] += 1
        if calls["n"] == bad_call:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(tr, "diffusion_loss", loss)


def test_nonfinite_loss_stops_and_names_the_step_without_a_checkpoint(tmp_path, digits,
                                                                      monkeypatch):
    from ddpmkit.train import TrainingDiverged

    _nan_at_step(monkeypatch, 3)
    with pytest.raises(TrainingDiverged, match="step 3"):
        train(_cfg(steps=6, checkpoint_every=2), tmp_path / "r", progress=False, dataset=digits)
    assert [p.name for p in list_checkpoints(tmp_path / "r")] == ["step_0000002"]


def test_nonfinite_loss_can_be_skipped(tmp_path, digits, monkeypatch):
    _nan_at_step(monkeypatch, 3)
    r = train(_cfg(steps=6, nonfinite="skip"), tmp_path / "r", progress=False, dataset=digits)
    assert r.step == 6
    ema = load_denoiser(tmp_path / "r")
    assert all(torch.isfinite(p).all() for p in ema.denoiser.net.parameters())
