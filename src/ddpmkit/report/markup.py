"""The report's HTML pieces: escaping, numbers, embedded pictures, cards, sections, tables."""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any


def e(v: Any) -> str:
    """``v`` as escaped HTML text."""
    return html.escape(str(v), quote=True)


def fmt(v: Any, digits: int = 4) -> str:
    """A number for a table: ``digits`` decimals (3 significant digits when tiny), "–" for
    None or non-finite, yes/no for booleans."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
    return e(v)


def fmt_time(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "–"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def img(data: bytes, alt: str, caption: str = "", pixel: bool = False) -> str:
    """A PNG embedded as base64 (``pixel``: scaled up without smoothing)."""
    b64 = base64.b64encode(data).decode("ascii")
    cls = ' class="pixel"' if pixel else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure{cls}><img src="data:image/png;base64,{b64}" alt="{e(alt)}">{cap}</figure>'


def card(k: str, v: str, s: str = "") -> str:
    return (f'<div class="card"><div class="k">{e(k)}</div><div class="v">{v}</div>'
            f'<div class="s">{s}</div></div>')


def section(sid: str, title: str, lead: str, body: str) -> str:
    return (f'<section id="{sid}"><h2>{e(title)}</h2><p class="lead">{lead}</p>{body}'
            "</section>")


def config_table(d: dict[str, Any]) -> str:
    rows = "".join(f"<tr><th>{e(k)}</th><td class='mono'>{e(json.dumps(v))}</td></tr>"
                   for k, v in d.items())
    return f"<table>{rows}</table>"
