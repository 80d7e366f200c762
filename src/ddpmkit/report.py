"""The run report: one static, self-contained ``report.html`` per run directory.

``write_report(run_dir)`` reads what the run left (config.json, log.jsonl, checkpoints/,
metrics.json of ``ddpmkit demo``, eval/*.json of ``ddpmkit eval``, samples.png,
trajectory.png, samples/step_*.png) and draws what is missing from the newest checkpoint
(a 64-sample grid and an x_t / x0_hat trajectory, a few seconds on a CPU). Every picture is a
PNG embedded as base64; the page has no scripts and loads nothing from the network.

Sections: headline numbers, samples, trajectory, training curves, error by t over training,
the ELBO weight C_t = (snr_{t-1} - snr_t)/2 beside the run's weighting w(t), the ELBO terms by t
(from an exact eval), every stored eval result with its settings, and the configuration.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
from pathlib import Path
from typing import Any

from .errors import InputError
from .evaluate import bucket_bpd, compare_bpd, load_evals
from .figures import elbo_by_t_png, error_by_t_png, training_curves_png, weights_png
from .io import atomic_write_bytes

REPORT_NAME = "report.html"


# --- reading the run ------------------------------------------------------------------------

def read_log(run_dir: Path) -> list[dict[str, Any]]:
    """The records of log.jsonl (a torn last line from a kill is skipped)."""
    path = run_dir / "log.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            out.append(rec)
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.name) if paths else None


# --- drawing from the checkpoint ------------------------------------------------------------

def draw_from_checkpoint(run_dir: Path, device: str = "cpu", seed: int = 0,
                         ) -> tuple[bytes | None, bytes | None, dict[str, Any]]:
    """(samples grid PNG, trajectory PNG or None for vector data, meta) from the EMA weights."""
    from .figures import preview
    from .train import load_denoiser

    loaded = load_denoiser(run_dir, device=device, verbose=False)
    kind = loaded.run.data["kind"]
    steps = min(loaded.denoiser.T, 100)
    pic = preview(loaded.denoiser, kind, loaded.run.data["shape"],
                  n=64 if kind == "image" else 2000, steps=steps, seed=seed, device=device,
                  trajectory=kind == "image", n_show=6)
    return pic.samples, pic.trajectory, {"steps": steps, "step": loaded.step}


# --- HTML -----------------------------------------------------------------------------------

CSS = """
:root { --fg:#1d2330; --muted:#5c6577; --bg:#f6f7fb; --card:#fff; --line:#e3e6ee;
  --accent:#3b5bdb; --good:#2b8a3e; --warn:#e8590c; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.55 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background:linear-gradient(120deg,#1f2a5a,#3b5bdb); color:#fff; padding:28px 0 24px; }
.wrap { max-width:1180px; margin:0 auto; padding:0 24px; }
header h1 { margin:0 0 4px; font-size:26px; letter-spacing:-.01em; }
header p { margin:0; opacity:.85; font-size:14px; }
nav { position:sticky; top:0; z-index:2; background:rgba(255,255,255,.92);
  backdrop-filter:blur(6px); border-bottom:1px solid var(--line); }
nav a { display:inline-block; padding:10px 12px; color:var(--muted); text-decoration:none;
  font-size:13px; font-weight:600; }
nav a:hover { color:var(--accent); }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(170px,1fr)); gap:14px;
  margin:22px 0 6px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:12px;
  padding:14px 16px; box-shadow:0 1px 2px rgba(20,30,60,.04); }
.card .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.05em; }
.card .v { font-size:24px; font-weight:700; margin-top:2px; font-variant-numeric:tabular-nums; }
.card .s { color:var(--muted); font-size:12px; }
section { background:var(--card); border:1px solid var(--line); border-radius:14px;
  padding:20px 22px; margin:18px 0; box-shadow:0 1px 2px rgba(20,30,60,.04); }
section h2 { margin:0 0 4px; font-size:19px; }
section .lead { color:var(--muted); margin:0 0 14px; font-size:14px; }
figure { margin:0; }
figure img { max-width:100%; height:auto; display:block; margin:0 auto; border-radius:6px; }
figcaption { color:var(--muted); font-size:13px; text-align:center; margin-top:6px; }
.pixel img { image-rendering:pixelated; }
.two { display:grid; grid-template-columns:minmax(0,1fr) minmax(0,1.3fr); gap:22px;
  align-items:start; }
@media (max-width:900px) { .two { grid-template-columns:1fr; } }
table { border-collapse:collapse; width:100%; font-size:13px; font-variant-numeric:tabular-nums; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line);
  vertical-align:top; }
th { color:var(--muted); font-weight:600; background:#fafbfd; }
td.num { text-align:right; }
code, .mono { font-family:ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size:12.5px; }
.pill { display:inline-block; padding:1px 8px; border-radius:999px; background:#edf2ff;
  color:var(--accent); font-size:12px; font-weight:600; }
.ok { color:var(--good); font-weight:600; } .bad { color:var(--warn); font-weight:600; }
.note { color:var(--muted); font-size:13px; }
details summary { cursor:pointer; font-weight:600; color:var(--accent); }
pre { background:#f3f5fa; border-radius:8px; padding:12px; overflow:auto; font-size:12px; }
footer { color:var(--muted); font-size:12px; padding:10px 0 40px; }
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _img(data: bytes, alt: str, caption: str = "", pixel: bool = False) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    cls = ' class="pixel"' if pixel else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure{cls}><img src="data:image/png;base64,{b64}" alt="{_e(alt)}">{cap}</figure>'


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
    return _e(v)


def _card(k: str, v: str, s: str = "") -> str:
    return (f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{v}</div>'
            f'<div class="s">{s}</div></div>')


def _section(sid: str, title: str, lead: str, body: str) -> str:
    return (f'<section id="{sid}"><h2>{_e(title)}</h2><p class="lead">{lead}</p>{body}'
            "</section>")


def _bpd_rows(evals: list[dict]) -> str:
    rows = []
    for r in evals:
        if "bpd" not in r:
            continue
        how = (f"{r.get('strata')} strata × {r.get('per_stratum')}, t ~ {r.get('proposal')}"
               if r["method"] == "stratified" else "all T terms")
        t = r.get("terms_bpd", {})
        rows.append(
            f"<tr><td><span class='pill'>{_e(r['method'])}</span><div class='note'>{_e(how)}"
            f"</div></td><td class='num'><b>{_fmt(r['bpd'])}</b> ± {_fmt(r['se_bpd'])}</td>"
            f"<td class='num'>{_fmt(t.get('prior'))}</td>"
            f"<td class='num'>{_fmt(t.get('consistency'))}</td>"
            f"<td class='num'>{_fmt(t.get('decoder'))}</td>"
            f"<td class='num'>{_fmt(r.get('rate_bpd'))} / {_fmt(r.get('distortion_bpd'))}</td>"
            f"<td>{_e(r.get('split'))}, n = {_e(r.get('n'))}, seed {_e(r.get('seed'))}, "
            f"batch {_e(r.get('batch_size', '–'))}</td>"
            f"<td class='num'>{_e(r.get('network_calls_per_example'))}</td>"
            f"<td class='num'>{_fmt(r.get('seconds'), 1)}</td>"
            f"<td>{_prov(r)}</td></tr>")
    if not rows:
        return ""
    return ("<h3>Negative ELBO (bits/dim)</h3><table><tr><th>method</th><th>bits/dim ± SE</th>"
            "<th>prior</th><th>consistency</th><th>decoder</th><th>rate / distortion</th>"
            "<th>data</th><th>calls / example</th><th>seconds</th><th>checkpoint</th></tr>"
            + "".join(rows) + "</table>")


def _sample_rows(evals: list[dict]) -> str:
    rows = []
    for r in evals:
        if "sampler" not in r or "bpd" in r:
            continue
        if "fd" in r:
            score = (f"FD <b>{_fmt(r['fd'], 3)}</b><div class='note'>real data "
                     f"{_fmt(r.get('fd_floor'), 3)}, ratio {_fmt(r.get('fd_ratio'), 2)}</div>")
        elif "sliced_w2" in r:
            score = (f"sliced W2 <b>{_fmt(r['sliced_w2'])}</b><div class='note'>test halves "
                     f"{_fmt(r.get('sliced_w2_floor'))}</div>")
        else:
            score = _e(r.get("note", "–"))
        rows.append(
            f"<tr><td>{score}</td><td>{_e(r['sampler'])}</td><td class='num'>"
            f"{_e(r.get('steps') or 'all')}</td><td>{_e(r.get('clip'))}</td>"
            f"<td class='num'>{_e(r.get('n'))}</td><td class='num'>{_e(r.get('seed'))}</td>"
            f"<td class='num'>{_fmt(r.get('sample_seconds'), 1)}</td><td>{_prov(r)}</td></tr>")
    if not rows:
        return ""
    return ("<h3>Sample quality</h3><table><tr><th>score</th><th>sampler</th><th>steps</th>"
            "<th>clip</th><th>n</th><th>seed</th><th>seconds</th><th>checkpoint</th></tr>"
            + "".join(rows) + "</table>")


def _prov(r: dict) -> str:
    sha = str(r.get("model_sha256") or "")[:12]
    ema = "EMA" if r.get("ema") else "raw"
    return (f"step {_e(r.get('step', '–'))}, {ema}<div class='note mono'>sha256 {_e(sha)}…"
            "</div>")


def _comparison(evals: list[dict]) -> tuple[str, list[dict]]:
    """Every stored stratified result next to the newest exact one of the same checkpoint,
    split and examples: agreement in standard errors and the saving at equal SE."""
    for e in reversed([r for r in evals if r.get("method") == "exact"]):
        key = (e.get("model_sha256"), e.get("split"), e.get("n"))
        same = [r for r in evals if r.get("method") == "stratified"
                and (r.get("model_sha256"), r.get("split"), r.get("n")) == key]
        if not same:
            continue
        comps = sorted((compare_bpd(e, s) for s in same),
                       key=lambda c: (str(c["proposal"]), c["strata"] or 0,
                                      c["per_stratum"] or 0))
        rows = "".join(_comparison_row(c) for c in comps)
        head = (f"<h3>Stratified against exact</h3><p class='note'>Same checkpoint, same "
                f"{e['n']} {_e(e['split'])} examples; exact: {_fmt(e['bpd'])} ± "
                f"{_fmt(e['se_bpd'])} with {e['network_calls_per_example']} calls per example. "
                "z = |difference| / SE of the stratified estimate. Saving at equal SE = (calls "
                "× n × SE²) of exact over that of stratified: above 1 the stratified estimate "
                "reaches a given precision more cheaply.</p>")
        return (head + "<table><tr><th>strata × draws</th><th>calls / example</th>"
                "<th>bits/dim ± SE</th><th>z</th><th>raw saving</th>"
                "<th>calls saving at equal SE</th><th>time saving at equal SE</th></tr>"
                + rows + "</table>", comps)
    return "", []


def _comparison_row(c: dict[str, Any]) -> str:
    calls = c["calls_per_example"]
    ok = "ok" if c["z"] <= 3 else "bad"
    return (f"<tr><td>{c['strata']} × {c['per_stratum']}, t ~ {_e(c.get('proposal'))}</td>"
            f"<td class='num'>{calls['stratified']}</td>"
            f"<td class='num'>{_fmt(c['bpd_stratified'])} ± {_fmt(c['se_stratified'])}</td>"
            f"<td class='num'><span class='{ok}'>{c['z']:.2f}</span></td>"
            f"<td class='num'>{calls['exact'] / max(1, calls['stratified']):.0f}×</td>"
            f"<td class='num'><b>{c['calls_ratio_equal_se']:.2f}×</b></td>"
            f"<td class='num'>{c['seconds_ratio_equal_se']:.2f}×</td></tr>")


def _config_table(d: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_e(k)}</th><td class='mono'>{_e(json.dumps(v))}</td></tr>"
                   for k, v in d.items())
    return f"<table>{rows}</table>"


def build_report(run_dir: str | os.PathLike, *, device: str = "cpu", draw: bool = True,
                 seed: int = 0) -> str:
    """The report's HTML text (see the module doc). ``draw``: sample from the checkpoint for
    pictures the run does not have (samples.png, trajectory.png)."""
    from .train import read_run

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise InputError(f"{run_dir} is not a run directory (no config.json); give the folder "
                         "that 'ddpmkit train' or 'ddpmkit demo' wrote")
    run = read_run(run_dir)
    cfg = run.config
    records = read_log(run_dir)
    metrics = _read_json(run_dir / "metrics.json")
    evals = load_evals(run_dir)
    schedule = cfg.noise_schedule()
    kind = run.data["kind"]

    samples_png = (run_dir / "samples.png").read_bytes() if (run_dir / "samples.png").is_file() \
        else None
    traj_png = (run_dir / "trajectory.png").read_bytes() \
        if (run_dir / "trajectory.png").is_file() else None
    sample_note = "from the demo (samples.png)" if samples_png else ""
    drawn_meta = None
    has_ckpt = any((run_dir / "checkpoints").glob("step_*")) \
        if (run_dir / "checkpoints").is_dir() else False
    if draw and has_ckpt and (samples_png is None or (traj_png is None and kind == "image")):
        grid, traj, drawn_meta = draw_from_checkpoint(run_dir, device=device, seed=seed)
        if samples_png is None:
            samples_png = grid
            sample_note = (f"drawn now: ancestral sampling, {drawn_meta['steps']} steps, seed "
                           f"{seed}, EMA weights of step {drawn_meta['step']}")
        traj_png = traj_png or traj
    if samples_png is None:
        newest = _newest(list((run_dir / "samples").glob("step_*.png"))) \
            if (run_dir / "samples").is_dir() else None
        if newest is not None:
            samples_png = newest.read_bytes()
            sample_note = f"from training: samples/{newest.name}"

    last = records[-1] if records else {}
    cards = [
        _card("training steps", f"{last.get('step', 0):,}",
              f"batch {cfg.batch_size} · {_fmt_time(last.get('elapsed_s'))}"),
        _card("last loss", _fmt(last.get("loss"), 4), f"{cfg.weighting} weighting"),
    ]
    tests = [r for r in evals if "bpd" in r and r.get("split") == "test" and r.get("se_bpd")]
    bpd_src = min(tests, key=lambda r: r["se_bpd"]) if tests else None  # the most precise
    if metrics and "test_bpd" in metrics:
        cards.append(_card("test bits/dim", f"{metrics['test_bpd']:.3f}",
                           f"± {metrics.get('test_bpd_se', float('nan')):.3f} · "
                           f"{_e(metrics.get('bpd_method', ''))}"))
    elif bpd_src:
        cards.append(_card("test bits/dim", f"{bpd_src['bpd']:.3f}",
                           f"± {bpd_src['se_bpd']:.3f} · {_e(bpd_src['method'])}"))
    fd_src = next((r for r in reversed(evals) if "fd" in r), None) or (
        metrics if metrics and "fd" in metrics else None)
    if fd_src:
        cards.append(_card("FD (digits)", f"{fd_src['fd']:.2f}",
                           f"real data {fd_src['fd_floor']:.2f} · ratio "
                           f"{fd_src['fd_ratio']:.2f}"))
    sw_src = next((r for r in reversed(evals) if "sliced_w2" in r), None)
    if sw_src:
        cards.append(_card("sliced W2", f"{sw_src['sliced_w2']:.4f}",
                           f"test halves {sw_src['sliced_w2_floor']:.4f}"))
    ips = last.get("imgs_per_s")
    cards.append(_card("throughput", f"{ips:.0f}/s" if ips else "–",
                       "examples per second, last window"))

    parts = []
    pics = []
    if samples_png:
        pics.append(_img(samples_png, "samples", _e(sample_note), pixel=kind == "image"))
    if traj_png:
        pics.append(_img(traj_png, "trajectory",
                         "rows: x_t (the noisy input) and x0_hat(x_t, t) (the denoiser's "
                         "estimate) along one reverse chain"))
    if pics:
        body = f"<div class='two'>{''.join(pics)}</div>" if len(pics) == 2 else pics[0]
        parts.append(_section("samples", "Samples and the reverse process",
                              "What the model draws, and how x0_hat sharpens as t falls.", body))
    else:
        parts.append(_section("samples", "Samples", "No checkpoint yet: nothing to draw.", ""))

    if records:
        body = _img(training_curves_png(records), "training curves")
        err = error_by_t_png(records)
        if err:
            body += "<br>" + _img(err, "error by t")
        parts.append(_section("training", "Training", f"{len(records)} log records from "
                              "log.jsonl (means over each logging window).", body))

    gamma = f", γ = {cfg.gamma:g}" if cfg.weighting == "min_snr" else ""
    parts.append(_section(
        "weights", "The ELBO weight C_t and the weighting used",
        "For t ≥ 2 the ELBO's consistency term is L_t = C_t ‖x̂₀(x_t, t) − x₀‖² with "
        "C_t = c_x0(t)² / (2σ_q²) = (snr<sub>t−1</sub> − snr<sub>t</sub>) / 2. Training "
        f"minimises w(t)‖x̂₀ − x₀‖² with the <span class='pill'>{_e(cfg.weighting)}</span> "
        f"weighting{gamma}, t ~ {_e(cfg.timesteps)}, parameterization "
        f"<span class='pill'>{_e(cfg.parameterization)}</span>.",
        _img(weights_png(schedule, cfg.weighting, cfg.gamma), "C_t and w(t)")))

    exact = next((r for r in reversed(evals) if r.get("by_t_bpd")), None)
    if exact is not None:
        parts.append(_section(
            "elbo", "ELBO terms by t",
            f"From the exact evaluation on the {_e(exact['split'])} split (n = {exact['n']}): "
            "prior L_T, every consistency term L_t, decoder L_1.",
            _img(elbo_by_t_png(exact, exact.get("consistency_by_bucket")
                               or bucket_bpd(exact["by_t_bpd"])), "ELBO by t")))
    elif (run_dir / "loss_by_t.png").is_file():
        parts.append(_section(
            "elbo", "Loss and ELBO terms by t", "From the demo (loss_by_t.png).",
            _img((run_dir / "loss_by_t.png").read_bytes(), "loss and ELBO by t")))

    comp_html, _ = _comparison(evals)
    eval_body = _bpd_rows(evals) + comp_html + _sample_rows(evals)
    if metrics:
        keep = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
        eval_body += ("<details><summary>metrics.json (written by ddpmkit demo)</summary>"
                      + _config_table(keep) + "</details>")
    if not eval_body:
        eval_body = (f"<p class='note'>No evaluations stored yet. Run <code>ddpmkit eval "
                     f"{_e(run_dir)} --bpd stratified</code>"
                     + (" or <code>--fd</code>" if cfg.data == "digits" else "")
                     + " and rebuild this page with <code>ddpmkit report</code>.</p>")
    parts.append(_section("eval", "Evaluation", "Every number with the settings it depends on "
                          "(stored in eval/*.json by <code>ddpmkit eval</code>).", eval_body))

    net = run.to_json()["net"]
    conf = (f"<div class='two'><div><h3>training</h3>{_config_table(cfg.to_dict())}</div>"
            f"<div><h3>network</h3>{_config_table(net)}<h3>data</h3>"
            f"{_config_table(run.data)}</div></div>")
    parts.append(_section("config", "Configuration", "config.json of the run.", conf))

    nav = "".join(f'<a href="#{s}">{t}</a>' for s, t in (
        ("samples", "Samples"), ("training", "Training"), ("weights", "Weights"),
        ("elbo", "ELBO by t"), ("eval", "Evaluation"), ("config", "Config")))
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    title = f"ddpmkit run · {run_dir.resolve().name}"
    sub = (f"{_e(cfg.data)} · {_e('×'.join(map(str, run.data['shape'])))} · "
           f"{_e(cfg.schedule)} T = {cfg.T} · {_e(cfg.parameterization)} · "
           f"{_e(cfg.weighting)} weighting")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f"<header><div class='wrap'><h1>{_e(title)}</h1><p>{sub}</p></div></header>"
        f"<nav><div class='wrap'>{nav}</div></nav><main class='wrap'>"
        f"<div class='cards'>{''.join(cards)}</div>{''.join(parts)}</main>"
        f"<footer class='wrap'>Written by <code>ddpmkit report</code> on {now} from "
        f"<code>{_e(run_dir.resolve())}</code>. Self-contained: no scripts, no network."
        "</footer></body></html>\n")


def _fmt_time(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "–"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def write_report(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None,
                 device: str = "cpu", draw: bool = True, seed: int = 0) -> Path:
    """Write RUN_DIR/report.html (or ``out``) atomically; returns its path."""
    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    text = build_report(run_dir, device=device, draw=draw, seed=seed)
    atomic_write_bytes(path, text.encode("utf-8"))
    return path
