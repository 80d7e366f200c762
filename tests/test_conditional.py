"""Class-conditional denoisers, classifier-free guidance, and the conditional ELBO."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpmkit import nets
from ddpmkit.data import load_dataset
from ddpmkit.data.dataset import Dataset
from ddpmkit.denoiser import Denoiser, GuidedDenoiser
from ddpmkit.errors import InputError
from ddpmkit.likelihood import DecoderSpec, negative_elbo_bpd
from ddpmkit.schedules import make_schedule
from ddpmkit.train import TrainConfig, load_denoiser, train

FIX = Path(__file__).parent / "fixtures"
TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "norm_groups": 4, "mid_attn": False}
SCHED = make_schedule("logsnr_linear", 40, logsnr_max=7.0, logsnr_min=-9.0)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddpmkit", *args, "--device", "cpu"],
                          capture_output=True, text=True)


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cond") / "run"
    train(TrainConfig(data="digits", steps=6, batch_size=32, net_overrides=TINY,
                      sample_every=0, checkpoint_every=6, warmup_steps=2, conditional=True), d,
          progress=False)
    return d


def test_an_unconditional_run_has_the_weights_of_before():
    """The same seed and config as before class conditioning existed: the same weights
    (tests/fixtures/unconditional_reference.safetensors, made at commit 2bceaa5)."""
    import tempfile

    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as d:
        # the defaults of then, spelled out: min_snr was the default weighting
        train(TrainConfig(data="digits", steps=8, batch_size=16, sample_every=0,
                          checkpoint_every=8, warmup_steps=2, net_overrides=TINY, seed=11,
                          weighting="min_snr"),
              Path(d) / "run", progress=False)
        got = load_file(str(Path(d) / "run/checkpoints/step_0000008/model.safetensors"))
    ref = load_file(str(FIX / "unconditional_reference.safetensors"))
    assert set(got) == set(ref)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6)


def test_class_embedding_changes_the_output_and_null_is_unconditional():
    net = nets.build_net(nets.preset("digits", T=40, num_classes=3, **TINY))
    den = Denoiser(net, SCHED, "v")
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([1, 5, 20, 40])
    a = den.x0_hat(x, t, torch.tensor([0, 0, 0, 0]))
    with torch.no_grad():
        net.class_emb.emb.weight.normal_()
    b, c = den.x0_hat(x, t, torch.tensor([1, 1, 1, 1])), den.x0_hat(x, t, torch.tensor([0] * 4))
    null = den.x0_hat(x, t, torch.tensor([3] * 4))
    assert not torch.allclose(b, c)
    torch.testing.assert_close(den.x0_hat(x, t), null)  # y = None is the null class
    assert a.shape == x.shape
    with pytest.raises(InputError, match="labels must lie in 0..2"):
        den.x0_hat(x, t, torch.tensor([0, 1, 2, 4]))


def test_guidance_is_the_formula_and_zero_is_the_conditional_denoiser():
    torch.manual_seed(0)
    net = nets.build_net(nets.preset("digits", T=40, num_classes=3, **TINY))
    with torch.no_grad():
        net.class_emb.emb.weight.normal_()
    den = Denoiser(net, SCHED, "v")
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([2, 10, 30]), torch.tensor([0, 1, 2])
    cond, unc = den.x0_hat(x, t, y), den.x0_hat(x, t)
    torch.testing.assert_close(den.conditioned(y).x0_hat(x, t), cond)
    torch.testing.assert_close(den.conditioned(y, 2.0).x0_hat(x, t), cond + 2.0 * (cond - unc),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="not one of this model's classes"):
        den.conditioned(torch.tensor([3]))
    with pytest.raises(InputError, match="unconditional"):
        Denoiser(nets.build_net(nets.preset("digits", T=40, **TINY)), SCHED).conditioned(y)


def test_conditional_elbo_uses_the_labels():
    torch.manual_seed(1)
    net = nets.build_net(nets.preset("digits", T=40, num_classes=10, **TINY))
    with torch.no_grad():
        net.class_emb.emb.weight.normal_()
    den = Denoiser(net, SCHED, "v")
    data = load_dataset("digits")
    kw = dict(method="exact", decoder=DecoderSpec(levels=17), seed=3)
    with_y = negative_elbo_bpd(den, data.test[:16], labels=data.test_labels[:16], **kw)
    again = negative_elbo_bpd(den, data.test[:16], labels=data.test_labels[:16], **kw)
    without = negative_elbo_bpd(den, data.test[:16], **kw)
    assert with_y == again and with_y.bpd != without.bpd
    # stratified and exact estimate the same conditional bound
    strat = negative_elbo_bpd(den, data.test[:16], labels=data.test_labels[:16],
                              method="stratified", strata=8, decoder=DecoderSpec(levels=17))
    assert abs(strat.bpd - with_y.bpd) < 4 * strat.se_bpd


def test_conditional_run_trains_samples_classes_and_evaluates(cond_run, tmp_path):
    loaded = load_denoiser(cond_run, verbose=False)
    assert loaded.denoiser.num_classes == 10 and loaded.run.data["num_classes"] == 10
    out = tmp_path / "grid.npz"
    p = cli("sample", str(cond_run), "--classes", "3,7", "--n", "6", "--steps", "2",
            "--guidance", "1.5", "--out", str(out), "--json")
    assert p.returncode == 0, p.stderr
    z = np.load(out)
    assert z["labels"].tolist() == [3, 3, 3, 7, 7, 7] and z["images"].shape == (6, 1, 8, 8)
    p = cli("eval", str(cond_run), "--bpd", "stratified", "--strata", "4", "--limit", "10",
            "--json", "--no-save")
    assert p.returncode == 0 and "-log p(x | y)" not in p.stderr
    import json

    res = json.loads(p.stdout)["bpd"]
    assert res["conditional"] is True
    p = cli("eval", str(cond_run), "--bpd", "stratified", "--strata", "4", "--limit", "10",
            "--json", "--no-save", "--unconditional")
    assert json.loads(p.stdout)["bpd"]["conditional"] is False


@pytest.mark.parametrize("args, msg", [
    (["--class", "10"], "not one of this run's 10 classes"),
    (["--classes", "1,x"], "class numbers"),
    (["--class", "1", "--guidance", "-1"], ">= 0"),
])
def test_bad_classes_are_one_line(cond_run, tmp_path, args, msg):
    p = cli("sample", str(cond_run), "--n", "2", "--out", str(tmp_path / "x.npz"), *args)
    assert p.returncode == 2 and msg in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()


def test_an_unconditional_run_refuses_a_class(tmp_path):
    run = tmp_path / "u"
    train(TrainConfig(data="digits", steps=1, batch_size=8, net_overrides=TINY, sample_every=0),
          run, progress=False)
    p = cli("sample", str(run), "--class", "3", "--n", "2", "--out", str(tmp_path / "x.npz"))
    assert p.returncode == 2 and "unconditional" in p.stderr


def _png(path: Path, value: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)


def test_image_subfolders_are_classes(tmp_path):
    for i, c in enumerate(["cat", "dog", "cat", "emu"]):
        _png(tmp_path / "imgs" / c / f"{i}.png", 30 * i)
    d = load_dataset(str(tmp_path / "imgs"))
    assert d.class_names == ("cat", "dog", "emu")
    names = [d.class_names[k] for k in d.train_labels.tolist()]
    assert sorted(names) == ["cat", "cat", "dog", "emu"]
    assert d.check_labels() == 3


@pytest.mark.parametrize("case, msg", [
    ("one_class", "single class"), ("no_labels", "no labels"),
    ("out_of_range", "outside the"), ("count", "labels"),
])
def test_bad_labels_are_refused_for_conditional_training(tmp_path, case, msg):
    x = torch.zeros(4, 1, 8, 8)
    y = {"one_class": torch.zeros(4, dtype=torch.int64), "no_labels": None,
         "out_of_range": torch.tensor([0, 1, 0, 1]),
         "count": torch.tensor([0, 1, 0, 1])}[case]
    test_y = torch.tensor([0, 5]) if case == "out_of_range" else None
    test_x = torch.zeros(2 if case != "count" else 3, 1, 8, 8)
    if case == "count":
        test_y = torch.tensor([0, 1])
    d = Dataset("toy", x, test_x, 17, "image", train_labels=y, test_labels=test_y)
    with pytest.raises(InputError, match=msg):
        d.check_labels()


def test_train_cli_conditional_on_a_one_class_folder_exits_2(tmp_path):
    for i in range(3):
        _png(tmp_path / "imgs" / "only" / f"{i}.png", 40 * i)
    p = cli("train", "--data", str(tmp_path / "imgs"), "--steps", "1", "--conditional", "--out",
            str(tmp_path / "run"))
    assert p.returncode == 2 and "single class" in p.stderr
    assert not (tmp_path / "run").exists()


def test_guided_denoiser_is_a_denoiser_for_every_sampler(cond_run):
    from ddpmkit.samplers import SAMPLER_NAMES, sample

    den = load_denoiser(cond_run, verbose=False).denoiser
    g = den.conditioned(torch.tensor([1, 2]), 1.0)
    assert isinstance(g, GuidedDenoiser)
    for name in SAMPLER_NAMES:
        x = sample(g, (2, 1, 8, 8), sampler=name, steps=3, seed=0).x
        assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all(), name


def test_the_report_of_a_conditional_run_shows_a_per_class_grid(cond_run):
    from ddpmkit.report import build_report

    html = build_report(cond_run)
    assert "one class per row" in html and "of each of its 10 classes" in html
