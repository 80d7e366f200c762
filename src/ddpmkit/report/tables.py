"""The evaluation tables: -ELBO results, stratified against exact, sample quality."""

from __future__ import annotations

from typing import Any

from ..evaluate import compare_bpd
from .markup import e, fmt


def bpd_table(evals: list[dict]) -> str:
    rows = [_bpd_row(r) for r in evals if "bpd" in r]
    if not rows:
        return ""
    return ("<h3>Negative ELBO (bits/dim)</h3><table><tr><th>method</th><th>bits/dim ± SE</th>"
            "<th>prior</th><th>consistency</th><th>decoder</th><th>rate / distortion</th>"
            "<th>data</th><th>calls / example</th><th>seconds</th><th>checkpoint</th></tr>"
            + "".join(rows) + "</table>")


def _bpd_row(r: dict) -> str:
    how = (f"{r.get('strata')} strata × {r.get('per_stratum')}, t ~ {r.get('proposal')}"
           if r["method"] == "stratified" else "all T terms")
    t = r.get("terms_bpd", {})
    return (
        f"<tr><td><span class='pill'>{e(r['method'])}</span><div class='note'>{e(how)}"
        f"</div></td><td class='num'><b>{fmt(r['bpd'])}</b> ± {fmt(r['se_bpd'])}</td>"
        f"<td class='num'>{fmt(t.get('prior'))}</td>"
        f"<td class='num'>{fmt(t.get('consistency'))}</td>"
        f"<td class='num'>{fmt(t.get('decoder'))}</td>"
        f"<td class='num'>{fmt(r.get('rate_bpd'))} / {fmt(r.get('distortion_bpd'))}</td>"
        f"<td>{e(r.get('split'))}, n = {e(r.get('n'))}, seed {e(r.get('seed'))}, "
        f"batch {e(r.get('batch_size', '–'))}</td>"
        f"<td class='num'>{e(r.get('network_calls_per_example'))}</td>"
        f"<td class='num'>{fmt(r.get('seconds'), 1)}</td>"
        f"<td>{_provenance(r)}</td></tr>")


def sample_table(evals: list[dict]) -> str:
    rows = [_sample_row(r) for r in evals if "sampler" in r and "bpd" not in r]
    if not rows:
        return ""
    return ("<h3>Sample quality</h3><table><tr><th>score</th><th>sampler</th><th>steps</th>"
            "<th>clip</th><th>n</th><th>seed</th><th>seconds</th><th>checkpoint</th></tr>"
            + "".join(rows) + "</table>")


def _sample_row(r: dict) -> str:
    if "fd" in r:
        score = (f"FD <b>{fmt(r['fd'], 3)}</b><div class='note'>real data "
                 f"{fmt(r.get('fd_floor'), 3)}, ratio {fmt(r.get('fd_ratio'), 2)}</div>")
    elif "sliced_w2" in r:
        score = (f"sliced W2 <b>{fmt(r['sliced_w2'])}</b><div class='note'>test halves "
                 f"{fmt(r.get('sliced_w2_floor'))}</div>")
    else:
        score = e(r.get("note", "–"))
    return (f"<tr><td>{score}</td><td>{e(r['sampler'])}</td><td class='num'>"
            f"{e(r.get('steps') or 'all')}</td><td>{e(r.get('clip'))}</td>"
            f"<td class='num'>{e(r.get('n'))}</td><td class='num'>{e(r.get('seed'))}</td>"
            f"<td class='num'>{fmt(r.get('sample_seconds'), 1)}</td><td>{_provenance(r)}</td>"
            "</tr>")


def _provenance(r: dict) -> str:
    sha = str(r.get("model_sha256") or "")[:12]
    ema = "EMA" if r.get("ema") else "raw"
    return (f"step {e(r.get('step', '–'))}, {ema}<div class='note mono'>sha256 {e(sha)}…"
            "</div>")


def comparison_table(evals: list[dict]) -> str:
    """Every stored stratified result next to the newest exact one of the same checkpoint,
    split and examples: agreement in standard errors and the saving at equal SE."""
    for ex in reversed([r for r in evals if r.get("method") == "exact"]):
        key = (ex.get("model_sha256"), ex.get("split"), ex.get("n"))
        same = [r for r in evals if r.get("method") == "stratified"
                and (r.get("model_sha256"), r.get("split"), r.get("n")) == key]
        if not same:
            continue
        comps = sorted((compare_bpd(ex, s) for s in same),
                       key=lambda c: (str(c["proposal"]), c["strata"] or 0,
                                      c["per_stratum"] or 0))
        head = (f"<h3>Stratified against exact</h3><p class='note'>Same checkpoint, same "
                f"{ex['n']} {e(ex['split'])} examples; exact: {fmt(ex['bpd'])} ± "
                f"{fmt(ex['se_bpd'])} with {ex['network_calls_per_example']} calls per example. "
                "z = |difference| / SE of the stratified estimate. Saving at equal SE = (calls "
                "× n × SE²) of exact over that of stratified: above 1 the stratified estimate "
                "reaches a given precision more cheaply.</p>")
        return (head + "<table><tr><th>strata × draws</th><th>calls / example</th>"
                "<th>bits/dim ± SE</th><th>z</th><th>raw saving</th>"
                "<th>calls saving at equal SE</th><th>time saving at equal SE</th></tr>"
                + "".join(_comparison_row(c) for c in comps) + "</table>")
    return ""


def _comparison_row(c: dict[str, Any]) -> str:
    calls = c["calls_per_example"]
    ok = "ok" if c["z"] <= 3 else "bad"
    return (f"<tr><td>{c['strata']} × {c['per_stratum']}, t ~ {e(c.get('proposal'))}</td>"
            f"<td class='num'>{calls['stratified']}</td>"
            f"<td class='num'>{fmt(c['bpd_stratified'])} ± {fmt(c['se_stratified'])}</td>"
            f"<td class='num'><span class='{ok}'>{c['z']:.2f}</span></td>"
            f"<td class='num'>{calls['exact'] / max(1, calls['stratified']):.0f}×</td>"
            f"<td class='num'><b>{c['calls_ratio_equal_se']:.2f}×</b></td>"
            f"<td class='num'>{c['seconds_ratio_equal_se']:.2f}×</td></tr>")
