"""docs/theory.md is executable: every snippet runs, every numbered equation is checked.

The snippets compare ddpmkit's functions with the paper's formulas written out by hand, so the
guide cannot drift from the code. The mutation tests below change one formula in ddpmkit at a
time (the kind of slip the guide warns about) and require the guide to fail.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest
import torch

from ddpmkit import diffusion as D
from ddpmkit import losses
from ddpmkit.schedules import NoiseSchedule

DOC = Path(__file__).resolve().parents[1] / "docs" / "theory.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
TAG = re.compile(r"\\tag\{(\d+)\}")
HEADER = re.compile(r"^# \((\d+)\) implemented by (.+)$")


def _snippets(text: str) -> list[tuple[int, str]]:
    """(offset in the doc, code) of every ```python block, in order."""
    return [(m.start(), m.group(2)) for m in FENCE.finditer(text) if m.group(1) == "python"]


def run_doc(path: Path = DOC) -> dict:
    """Execute all python snippets of the doc in one namespace; raise on the first failure."""
    text = path.read_text(encoding="utf-8")
    ns: dict = {"__name__": "theory_doc"}
    # the snippets use tiny tensors: one thread avoids oversubscription on a busy 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i, (offset, code) in enumerate(_snippets(text)):
            line = text.count("\n", 0, offset) + 1
            try:
                exec(compile(code, f"{path.name}:snippet{i}@line{line}", "exec"), ns)
            except AssertionError as err:
                raise AssertionError(f"{path.name} line {line}: {err}") from err
    finally:
        torch.set_num_threads(threads)
    return ns


def _resolve(dotted: str) -> object:
    """ddpmkit.a.b.c -> the object, importing the longest module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_snippet_of_the_theory_guide_runs():
    ns = run_doc()
    assert ns["check_equivalence"] is not None  # the last sections ran, not only the set-up


def test_every_numbered_equation_is_followed_by_a_snippet_naming_its_function():
    text = DOC.read_text(encoding="utf-8")
    tags = [(m.start(), int(m.group(1))) for m in TAG.finditer(text)]
    numbers = [n for _, n in tags]
    assert numbers == list(range(1, len(numbers) + 1)), f"equations not numbered 1..n: {numbers}"
    assert len(numbers) >= 20
    snippets = _snippets(text)
    bounds = [off for off, _ in tags[1:]] + [len(text)]
    for (off, n), end in zip(tags, bounds):
        after = [code for s_off, code in snippets if off < s_off < end]
        assert after, f"equation ({n}) has no python snippet before the next equation"
        head = HEADER.match(after[0].splitlines()[0])
        assert head and int(head.group(1)) == n, (
            f"the snippet after ({n}) must start with '# ({n}) implemented by ddpmkit...'"
        )
        names = re.findall(r"ddpmkit(?:\.\w+)+", head.group(2))
        assert names, f"equation ({n}) names no ddpmkit function"
        for name in names:
            _resolve(name)  # raises if the named function, class or property does not exist


def test_the_guide_shows_both_forms_of_C_t_and_the_decoder():
    text = DOC.read_text(encoding="utf-8")
    assert r"\frac12\big(\mathrm{snr}_{t-1} - \mathrm{snr}_t\big)" in text
    assert r"\frac{1}{2\sigma_q^2}\left(\frac{(1-\alpha_t)\sqrt{\bar\alpha_{t-1}}}" in text
    for img in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (DOC.parent / img).is_file(), f"the guide shows a missing image {img}"


def _github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_contents_links_point_at_headings():
    text = DOC.read_text(encoding="utf-8")
    prose = FENCE.sub("", text)  # python comments are not headings
    anchors = {_github_anchor(h) for h in re.findall(r"^#+ (.+)$", prose, re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(links) >= 9
    assert set(links) <= anchors, sorted(set(links) - anchors)


# ---- the guide must fail when a formula in the code changes ------------------------------
def _prev(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x[:1], x[:-1]])


def _c_t_off_by_one(schedule: NoiseSchedule) -> torch.Tensor:
    """C_{t+1} stored at t, i.e. (snr_t - snr_{t+1})/2: the 0-based-index slip."""
    C = _ORIG["consistency_weight"](schedule)
    C = torch.cat([C[1:], C[-1:]])
    C[:2] = float("nan")
    return C


def _posterior_dropped_bar(schedule: NoiseSchedule):
    """c_x0 with 1 - alpha_t where 1 - alpha_bar_t belongs (the slides' missing bar)."""
    c_xt, c_x0, var = _ORIG["posterior_coefficients"](schedule)
    c_x0 = schedule.beta * torch.sqrt(_prev(schedule.alpha_bar)) / schedule.beta.clamp(min=1e-300)
    c_x0[0] = float("nan")
    return c_xt, c_x0, var


def _posterior_large_variance(schedule: NoiseSchedule):
    """sigma_q^2 replaced by beta_t (the two variance choices confused)."""
    c_xt, c_x0, _ = _ORIG["posterior_coefficients"](schedule)
    var = schedule.beta.clone()
    var[0] = float("nan")
    return c_xt, c_x0, var


def _q_sample_variance_for_std(schedule, x0, t, noise):
    """x_t = sqrt(alpha_bar) x_0 + (1 - alpha_bar) eps: a variance used as a std."""
    t = D.as_timesteps(t, x0, schedule.T)
    a = D.extract(torch.sqrt(schedule.alpha_bar), t, x0)
    return a * x0 + D.extract(schedule.one_minus_alpha_bar, t, x0) * noise


def _eps_wrong_sign(schedule, x_t, x0, t):
    return -_ORIG["eps_from_x0"](schedule, x_t, x0, t)


def _loss_weights_simple_as_one(schedule, weighting, **kw):
    w = _ORIG["loss_weights"](schedule, weighting, **kw)
    if weighting == "simple":
        w = torch.ones_like(w)
        w[0] = 0.0
    return w


def _prior_kl_without_log(schedule, x0):
    ab_T = schedule.alpha_bar[-1].item()
    return 0.5 * (ab_T * x0**2 - ab_T)


def _gaussian_kl_swapped(mean1, var1, mean2, var2):
    return _ORIG["gaussian_kl"](mean1, var2, mean2, var1)


_ORIG = {"posterior_coefficients": D.posterior_coefficients,
         "consistency_weight": D.consistency_weight,
         "eps_from_x0": D.eps_from_x0, "loss_weights": losses.loss_weights,
         "gaussian_kl": D.gaussian_kl}

MUTANTS = {
    "C_t off by one step": (D, "consistency_weight", _c_t_off_by_one),
    "c_x0 with a dropped bar": (D, "posterior_coefficients", _posterior_dropped_bar),
    "sigma_q^2 replaced by beta_t": (D, "posterior_coefficients", _posterior_large_variance),
    "q_sample variance as std": (D, "q_sample", _q_sample_variance_for_std),
    "eps conversion sign": (D, "eps_from_x0", _eps_wrong_sign),
    "simple weight = 1 on x0-MSE": (losses, "loss_weights", _loss_weights_simple_as_one),
    "prior KL without the log term": (D, "prior_kl", _prior_kl_without_log),
    "KL with swapped variances": (D, "gaussian_kl", _gaussian_kl_swapped),
}


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_the_guide_fails_when_a_formula_in_the_code_changes(mutant, monkeypatch):
    module, name, replacement = MUTANTS[mutant]
    monkeypatch.setattr(module, name, replacement)
    with pytest.raises(AssertionError):
        run_doc()


def _figures_module():
    path = DOC.parents[1] / "examples" / "theory_figures.py"
    spec = importlib.util.spec_from_file_location("theory_figures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parameterization_weights_are_the_mse_ratios_of_the_conversions():
    from ddpmkit.schedules import cosine

    figs = _figures_module()
    sched = cosine(200)
    w = figs.parameterization_weights(sched)
    x0, noise = torch.randn(2, 4, 3, dtype=torch.float64)
    x0_hat = x0 + torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([2, 50, 150, 200])
    x_t = D.q_sample(sched, x0, t, noise)
    err = ((x0_hat - x0) ** 2).sum(1)
    for name, param in (("eps", "eps-MSE"), ("v", "v-MSE"), ("mu", "mu-MSE")):
        pred = D.prediction_from_x0(sched, x_t, x0_hat, t, name)
        target = D.prediction_from_x0(sched, x_t, x0, t, name)
        key = next(k for k in w if k.startswith(param))
        torch.testing.assert_close(((pred - target) ** 2).sum(1), w[key][t] * err, rtol=1e-7,
                                   atol=0.0)


def test_trajectory_figure_draws_x_t_and_x0_hat_of_a_denoiser(tmp_path):
    from ddpmkit.denoiser import Denoiser
    from ddpmkit.schedules import cosine

    figs = _figures_module()
    den = Denoiser(lambda x, t: 0.5 * torch.tanh(x), cosine(20), "x0")
    out = tmp_path / "trajectory.png"
    figs.figure_trajectory(den, (2, 1, 8, 8), out, show_t=(20, 10, 1))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
