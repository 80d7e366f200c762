"""`ddpmkit report`: a self-contained page that a real browser renders without errors.

The browser test drives Debian's chromium headless over the DevTools protocol on a pipe
(--remote-debugging-pipe: JSON messages separated by NUL on fds 3/4; no port, no websocket
library). It installs chromium with apt-get when missing and it can (root, apt), else skips
with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddpmkit.evaluate import eval_bpd, eval_samples, save_eval
from ddpmkit.report import build_report, read_log, write_report
from ddpmkit.train import TrainConfig, load_denoiser, train

TINY = {"ch": 8, "ch_mult": (1, 2), "num_res_blocks": 1, "norm_groups": 4, "mid_attn": False}
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny digits run (T = 50, 12 steps) with an exact and a stratified eval and an FD."""
    d = tmp_path_factory.mktemp("report") / "run"
    cfg = TrainConfig(data="digits", steps=12, batch_size=32, net_overrides=TINY, T=50,
                      sample_every=0, log_every=3, warmup_steps=2, checkpoint_every=12, lr=3e-3,
                      weighting="min_snr")  # a name the report must show
    train(cfg, d, progress=False)
    loaded = load_denoiser(d, verbose=False)
    for method in ("exact", "stratified"):
        save_eval(d, eval_bpd(loaded, method=method, strata=10, limit=40))
    res, _ = eval_samples(loaded, n=30, steps=3)
    save_eval(d, res)
    write_report(d)
    return d


def test_report_embeds_everything_and_loads_nothing(run_dir):
    text = (run_dir / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    srcs = re.findall(r'<img src="([^"]+)"', text)
    # samples, trajectory, training curves, error by t, C_t, ELBO by t
    assert len(srcs) >= 6
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in text.lower()
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<link" not in text.lower()
    for needle in ("Samples and the reverse process", "Training", "C_t", "ELBO terms by t",
                   "stratified", "exact", "FD", "sha256", "min_snr"):
        assert needle in text, needle


def test_report_shows_exact_vs_stratified_comparison(run_dir):
    text = (run_dir / "report.html").read_text()
    assert "Stratified against exact" in text and "calls saving at equal SE" in text
    assert text.count("<td>10 × 1, t ~ weight</td>") == 1  # a row per stored stratified result


def test_report_without_checkpoint_or_evals(tmp_path):
    """A run interrupted before its first checkpoint still gets a page (no pictures to draw)."""
    d = tmp_path / "r"
    cfg = TrainConfig(data="digits", steps=6, batch_size=16, net_overrides=TINY, T=20,
                      sample_every=0, log_every=2, warmup_steps=1, checkpoint_every=100)
    train(cfg, d, progress=False, stop_after=4)
    html = build_report(d)
    assert "No checkpoint yet" in html and "No evaluations stored yet" in html
    assert len(read_log(d)) == 2


def test_read_log_skips_a_torn_line(tmp_path):
    (tmp_path / "log.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    assert read_log(tmp_path) == [{"step": 1, "loss": 0.5}]


@pytest.mark.subprocess
def test_report_cli_json_and_bad_dir(run_dir, tmp_path):
    out = tmp_path / "r.html"
    p = subprocess.run([sys.executable, "-m", "ddpmkit", "report", str(run_dir), "--out",
                        str(out), "--no-draw", "--json", "--device", "cpu"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["report"] == str(out) and out.stat().st_size > 10_000
    p = subprocess.run([sys.executable, "-m", "ddpmkit", "report", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "config.json" in p.stderr


# --- the real browser -----------------------------------------------------------------------

def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("chromium is not installed and cannot be installed here (needs root and "
                    "apt-get): apt-get install -y chromium")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        p = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "chromium"],
                           capture_output=True, text=True, timeout=900, env=env)
        if p.returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, timeout=300, env=env)
            p = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                                "chromium"], capture_output=True, text=True, timeout=900,
                               env=env)
    except subprocess.TimeoutExpired:
        pytest.skip("installing chromium with apt-get timed out")
    if p.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"could not install chromium with apt-get: {p.stderr.strip()[-200:]}")
    return shutil.which("chromium")


class DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, exe: str, profile: Path) -> None:
        r_in, w_in = os.pipe()  # we write, chromium reads on its fd 3
        r_out, w_out = os.pipe()  # chromium writes on its fd 4, we read

        def child_fds() -> None:
            # copy first: the pipe fds may themselves be 3 or 4, and dup2(fd, fd) would keep
            # close-on-exec; os.dup2 makes its target inheritable
            a, b = os.dup(r_in), os.dup(w_out)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, *CHROME_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
             "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=child_fds, close_fds=False)
        # (close_fds would close 3 and 4 after preexec_fn; our other fds are non-inheritable)
        os.close(r_in)
        os.close(w_out)
        self.w, self.r = os.fdopen(w_in, "wb", buffering=0), os.fdopen(r_out, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.r], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = self.r.read(1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, name: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        for i, m in enumerate(self.events):
            if m.get("method") == name:
                return self.events.pop(i)
        while True:
            m = self._read(deadline)
            self.events.append(m)
            if m.get("method") == name:
                return m

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _console_errors(events: list[dict]) -> list[str]:
    errs = []
    for m in events:
        p = m.get("params", {})
        if m.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errs.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        elif m.get("method") == "Runtime.exceptionThrown":
            errs.append(p["exceptionDetails"].get("text", "exception"))
        elif m.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
            errs.append(p["entry"]["text"])
    return errs


@pytest.mark.subprocess
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    exe = _chromium()
    dt = DevTools(exe, tmp_path / "profile")
    try:
        target = dt.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = dt.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            dt.call(f"{domain}.enable", session=s)
        dt.call("Page.navigate", {"url": (run_dir / "report.html").resolve().as_uri()},
                session=s)
        dt.wait_event("Page.loadEventFired", timeout=60)
        res = dt.call("Runtime.evaluate", {
            "expression": "JSON.stringify(Array.from(document.images).map(i => "
                          "[i.alt, i.complete, i.naturalWidth, i.naturalHeight]))",
            "returnByValue": True}, session=s)
        images = json.loads(res["result"]["value"])
        title = dt.call("Runtime.evaluate", {"expression": "document.title",
                                             "returnByValue": True}, session=s)
        time.sleep(0.3)  # late console messages
        dt.call("Runtime.evaluate", {"expression": "1"}, session=s)
    finally:
        dt.close()
    assert title["result"]["value"].startswith("ddpmkit run")
    assert len(images) >= 6
    broken = [alt for alt, complete, w, h in images if not (complete and w > 0 and h > 0)]
    assert not broken, f"images that did not render: {broken}"
    assert not _console_errors(dt.events), _console_errors(dt.events)
