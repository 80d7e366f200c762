"""The headline cards: steps, last loss, test bits/dim, FD, sliced W2, throughput."""

from __future__ import annotations

from .collect import Collected
from .markup import card, e, fmt, fmt_time


def cards(c: Collected) -> str:
    cfg = c.run.config
    last = c.records[-1] if c.records else {}
    out = [
        card("training steps", f"{last.get('step', 0):,}",
             f"batch {cfg.batch_size} · {fmt_time(last.get('elapsed_s'))}"),
        card("last loss", fmt(last.get("loss"), 4), f"{cfg.weighting} weighting"),
    ]
    out += _bpd_card(c)
    fd_src = next((r for r in reversed(c.evals) if "fd" in r), None) or (
        c.metrics if c.metrics and "fd" in c.metrics else None)
    if fd_src:
        out.append(card("FD (digits)", f"{fd_src['fd']:.2f}",
                        f"real data {fd_src['fd_floor']:.2f} · ratio {fd_src['fd_ratio']:.2f}"))
    sw_src = next((r for r in reversed(c.evals) if "sliced_w2" in r), None)
    if sw_src:
        out.append(card("sliced W2", f"{sw_src['sliced_w2']:.4f}",
                        f"test halves {sw_src['sliced_w2_floor']:.4f}"))
    ips = last.get("imgs_per_s")
    out.append(card("throughput", f"{ips:.0f}/s" if ips else "–",
                    "examples per second, last window"))
    return "".join(out)


def _bpd_card(c: Collected) -> list[str]:
    """The demo's test bits/dim, else the most precise stored test-split result."""
    m = c.metrics
    if m and "test_bpd" in m:
        return [card("test bits/dim", f"{m['test_bpd']:.3f}",
                     f"± {m.get('test_bpd_se', float('nan')):.3f} · "
                     f"{e(m.get('bpd_method', ''))}")]
    tests = [r for r in c.evals if "bpd" in r and r.get("split") == "test" and r.get("se_bpd")]
    if not tests:
        return []
    best = min(tests, key=lambda r: r["se_bpd"])
    return [card("test bits/dim", f"{best['bpd']:.3f}",
                 f"± {best['se_bpd']:.3f} · {e(best['method'])}")]
