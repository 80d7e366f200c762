"""The run report: one static, self-contained ``report.html`` per run directory.

``write_report(run_dir)`` collects what the run left (config.json, log.jsonl, checkpoints/,
metrics.json of ``ddpmkit demo``, eval/*.json of ``ddpmkit eval``, samples.png,
trajectory.png, samples/step_*.png) and draws what is missing from the newest checkpoint
(a 64-sample grid and an x_t / x0_hat trajectory, a few seconds on a CPU): collect.py. Then
the headline numbers (cards.py) and the sections (sections.py): samples, trajectory, training
curves, error by t over training, the ELBO weight C_t = (snr_{t-1} - snr_t)/2 beside the run's
weighting w(t), the ELBO terms by t (from an exact eval), every stored eval result with its
settings (tables.py), and the configuration. Every picture is a PNG from ddpmkit.figures
embedded as base64; the style sheet is report.css, inlined; the page has no scripts and loads
nothing from the network.
"""

from __future__ import annotations

import datetime as _dt
import os
from importlib import resources
from pathlib import Path

from ..io import atomic_write_bytes
from ..train import read_log
from .cards import cards
from .collect import Collected, collect
from .markup import e
from .sections import NAV, sections

REPORT_NAME = "report.html"

__all__ = ["REPORT_NAME", "build_report", "read_log", "write_report"]


def build_report(run_dir: str | os.PathLike, *, device: str = "cpu", draw: bool = True,
                 seed: int = 0) -> str:
    """The report's HTML text (see the module doc). ``draw``: sample from the checkpoint for
    pictures the run does not have (samples.png, trajectory.png)."""
    c = collect(Path(run_dir), device=device, draw=draw, seed=seed)
    return _page(c, cards(c), sections(c))


def write_report(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None,
                 device: str = "cpu", draw: bool = True, seed: int = 0) -> Path:
    """Write RUN_DIR/report.html (or ``out``) atomically; returns its path."""
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    text = build_report(run_dir, device=device, draw=draw, seed=seed)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path


def _page(c: Collected, cards_html: str, sections_html: str) -> str:
    cfg = c.run.config
    css = resources.files(__package__).joinpath("report.css").read_text(encoding="utf-8")
    nav = "".join(f'<a href="#{s}">{t}</a>' for s, t in NAV)
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    title = f"ddpmkit run · {c.run_dir.resolve().name}"
    sub = (f"{e(cfg.data)} · {e('×'.join(map(str, c.run.data['shape'])))} · "
           f"{e(cfg.schedule)} T = {cfg.T} · {e(cfg.parameterization)} · "
           f"{e(cfg.weighting)} weighting")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{e(title)}</title><style>\n{css}</style></head><body>"
        f"<header><div class='wrap'><h1>{e(title)}</h1><p>{sub}</p></div></header>"
        f"<nav><div class='wrap'>{nav}</div></nav><main class='wrap'>"
        f"<div class='cards'>{cards_html}</div>{sections_html}</main>"
        f"<footer class='wrap'>Written by <code>ddpmkit report</code> on {now} from "
        f"<code>{e(c.run_dir.resolve())}</code>. Self-contained: no scripts, no network."
        "</footer></body></html>\n")
