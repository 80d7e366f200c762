"""Our U-Net against denoising-diffusion-pytorch's Unet and diffusers' UNet2DModel, same size.

    make bench        # creates/refreshes .venv-bench, then runs this script
    .venv-bench/bin/python benchmarks/bench_nets.py [--repeats 5] [--quick]

For each setting (28x28x1 batch 64 with our ``mnist`` preset; 32x32x3 batch 32 with our
``cifar10`` preset, Ho et al.'s 35.7M model) it builds our net and one peer per library with
the same parameter count (+-10 %):
- diffusers UNet2DModel with our exact layout (widths, blocks per level, attention levels,
  GroupNorm 32, one attention head): the same 35.7M / 6.47M parameters, the same FLOPs;
- denoising-diffusion-pytorch Unet with the same ``dim_mults`` and its own layout, ``dim``
  chosen to match our parameter count.
Then, in one process, interleaved (every round runs each net once, in turn), after a warm-up
round, median over ``--repeats`` rounds (>= 5):
  (a) training step images/s: forward + MSE + backward + AdamW (fused where torch has it,
      the same optimizer for every net);
  (b) sampling: network evaluations (images) per second at batch 64, under inference_mode;
  (c) achieved training FLOP/s (torch.utils.flop_counter on one step) as a share of the
      machine's peak = the better of a 2048^2 float32 matmul and a channels_last 3x3 conv
      (b64, 64->64, 32x32), both timed here in the same rounds (the NCHW conv is recorded too).
Writes benchmarks/results/nets_<date>.json (keys name each ratio, e.g.
``train_ratio_vs_diffusers``) and the table in docs/benchmarks.md under
"## Networks: training and sampling speed" (other sections of that file are kept).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ddpmkit.nets import build_net, count_parameters, preset

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Networks: training and sampling speed"
T = 1000


# ---- peers -------------------------------------------------------------------------------
class DiffusersNet(nn.Module):
    """diffusers' UNet2DModel as net(x_t, t) -> tensor (what a user of it would write)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, t).sample


def diffusers_peer(cfg, size: int) -> nn.Module:
    from diffusers import UNet2DModel

    widths = tuple(cfg.ch * m for m in cfg.ch_mult)
    levels = range(len(widths))
    down = tuple("AttnDownBlock2D" if i in cfg.attn_levels else "DownBlock2D" for i in levels)
    up = tuple("AttnUpBlock2D" if i in cfg.attn_levels else "UpBlock2D"
               for i in reversed(levels))
    model = UNet2DModel(
        sample_size=size, in_channels=cfg.in_channels, out_channels=cfg.in_channels,
        block_out_channels=widths, layers_per_block=cfg.num_res_blocks,
        down_block_types=down, up_block_types=up, attention_head_dim=None,
        norm_num_groups=cfg.norm_groups, dropout=cfg.dropout, add_attention=cfg.mid_attn,
    )
    return DiffusersNet(model)


def ddpm_pytorch_peer(cfg, target_params: int) -> tuple[nn.Module, int]:
    from denoising_diffusion_pytorch import Unet

    def make(dim: int) -> nn.Module:
        return Unet(dim=dim, dim_mults=cfg.ch_mult, channels=cfg.in_channels,
                    dropout=cfg.dropout)

    counts: dict[int, int] = {}
    for d in range(8, 1025, 4):  # the count grows with dim: stop once past the target
        counts[d] = count_parameters(make(d))
        if counts[d] > target_params:
            break
    best = min(counts, key=lambda d: abs(counts[d] - target_params))
    return make(best), best


# ---- timing helpers ----------------------------------------------------------------------
DEVICE = torch.device("cpu")  # set by main(--device)
INNER = 1  # calls per timed sample (more on a GPU, where one call is ~ms)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn: Callable[[], object]) -> float:
    """Seconds per call: INNER calls between two device syncs."""
    _sync()
    t0 = time.perf_counter()
    for _ in range(INNER):
        fn()
    _sync()
    return (time.perf_counter() - t0) / INNER


def peak_probes() -> dict[str, tuple[Callable[[], object], float]]:
    """name -> (call, FLOPs per call) for the machine-peak probes."""
    if DEVICE.type == "cuda":  # the GPU's ceilings: big matmuls in bf16 and in fp32
        n = 8192
        a16, b16 = (torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
        a32, b32 = (torch.randn(n, n, device=DEVICE) for _ in range(2))
        return {"matmul_8192_bf16": (lambda: a16 @ b16, 2.0 * n**3),
                "matmul_8192_fp32": (lambda: a32 @ b32, 2.0 * n**3)}
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    conv = nn.Conv2d(64, 64, 3, padding=1).eval()
    x_cl = torch.randn(64, 64, 32, 32).contiguous(memory_format=torch.channels_last)
    x_nchw = x_cl.contiguous()
    conv_flops = 2.0 * 64 * 64 * 9 * 32 * 32 * 64

    def run_conv(x: torch.Tensor) -> Callable[[], object]:
        def f() -> object:
            with torch.inference_mode():
                return conv(x)
        return f

    return {
        "matmul_2048": (lambda: a @ b, 2.0 * 2048**3),
        "conv3x3_channels_last": (run_conv(x_cl), conv_flops),
        "conv3x3_nchw": (run_conv(x_nchw), conv_flops),
    }


def make_optimizer(net: nn.Module) -> torch.optim.Optimizer:
    try:
        return torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(net.parameters(), lr=1e-4)


def train_step_fn(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                  t: torch.Tensor, bf16: bool = False) -> Callable[[], object]:
    def step() -> object:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=bf16):
            loss = (net(x, t).float() - x).square().mean()
        loss.backward()
        opt.step()
        return loss
    return step


def sample_fn(net: nn.Module, x: torch.Tensor, t: torch.Tensor,
              bf16: bool = False) -> Callable[[], object]:
    def call() -> object:
        with torch.inference_mode(), torch.autocast(DEVICE.type, dtype=torch.bfloat16,
                                                    enabled=bf16):
            return net(x, t)
    return call


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


# ---- the benchmark -----------------------------------------------------------------------
SETTINGS = {
    # name: (preset, C, H=W, train batch)
    "28x28x1": ("mnist", 1, 28, 64),
    "32x32x3": ("cifar10", 3, 32, 32),
}
SAMPLE_BATCH = 64
BATCH_SCALE = 1  # --batch-scale: multiplies the train and sample batches (GPUs want more)


def run(repeats: int, settings: list[str], log: Callable[[str], None],
        variants: tuple[str, ...] = ()) -> dict:
    torch.manual_seed(0)
    load_before = os.getloadavg()
    probes = peak_probes()
    cases: dict[str, dict] = {}  # case name -> info + callables
    for s in settings:
        pname, C, H, B = SETTINGS[s]
        B *= BATCH_SCALE
        sb = SAMPLE_BATCH * BATCH_SCALE
        cfg = preset(pname)
        ours = build_net(cfg)
        n_ours = count_parameters(ours)
        dif = diffusers_peer(cfg, H)
        ddp, ddp_dim = ddpm_pytorch_peer(cfg, n_ours)
        nets = {"ours": (ours, f"ddpmkit preset {pname!r}"),
                "diffusers": (dif, "UNet2DModel, our layout"),
                "ddpm_pytorch": (ddp, f"Unet(dim={ddp_dim}, dim_mults={cfg.ch_mult})")}
        if "winograd" in variants:  # UNetConfig(conv3x3="winograd"): F(4x4) where it pays
            nets["ours_winograd"] = (build_net(preset(pname, conv3x3="winograd")),
                                     "ours, conv3x3='winograd'")
        if "nchw" in variants:  # the channels_last knob, measured
            nets["ours_nchw"] = (build_net(preset(pname, channels_last=False)),
                                 "ours, channels_last=False")
        if "bf16" in variants:  # bf16 autocast for ours and the peers alike
            nets["ours_bf16"] = (build_net(cfg), "ours under bf16 autocast")
            nets["diffusers_bf16"] = (diffusers_peer(cfg, H), "diffusers under bf16 autocast")
            if DEVICE.type == "cuda":
                nets["ddpm_pytorch_bf16"] = (ddpm_pytorch_peer(cfg, n_ours)[0],
                                             "ddpm-pytorch under bf16 autocast")
        if "compile" in variants:  # torch.compile (default mode) under bf16, ours and diffusers
            nets["ours_bf16_compile"] = (build_net(cfg), "ours, bf16 + torch.compile")
            nets["diffusers_bf16_compile"] = (diffusers_peer(cfg, H),
                                              "diffusers, bf16 + torch.compile")
        x, t = (torch.randn(B, C, H, H, device=DEVICE),
                torch.randint(1, T + 1, (B,), device=DEVICE))
        xs, ts = (torch.randn(sb, C, H, H, device=DEVICE),
                  torch.randint(1, T + 1, (sb,), device=DEVICE))
        for name, (net, desc) in nets.items():
            net.to(DEVICE)
            if name.endswith("_compile"):
                net = torch.compile(net)
            n = count_parameters(net)
            if abs(n - n_ours) > 0.1 * n_ours:
                raise RuntimeError(f"{s} {name}: {n} parameters vs ours {n_ours} (> 10 %)")
            net.train()
            opt = make_optimizer(net)
            bf16 = "_bf16" in name
            step = train_step_fn(net, opt, x, t, bf16)
            cases[f"{s}/{name}"] = {
                "setting": s, "net": name, "desc": desc, "params": n, "batch": B,
                "train": step, "sample": sample_fn(net, xs, ts, bf16),
                "train_flops": 0 if name.endswith("_compile") else count_flops(step),
                "sample_flops": 0 if name.endswith("_compile") else count_flops(
                    sample_fn(net, xs, ts, bf16)),
                "train_s": [], "sample_s": [],
            }
            log(f"built {s:8s} {name:13s} {n / 1e6:7.3f}M params  ({desc})")

    peak_s: dict[str, list[float]] = {k: [] for k in probes}
    for r in range(repeats + 1):  # round 0 is the warm-up
        for k, (fn, _) in probes.items():
            fn()
            dt_ = statistics.median(timed(fn) for _ in range(3))
            if r:
                peak_s[k].append(dt_)
        for key, c in cases.items():
            for what in ("train", "sample"):
                dt_ = timed(c[what])
                if r:
                    c[f"{what}_s"].append(dt_)
            if r:
                log(f"round {r}/{repeats} {key:24s} train {c['train_s'][-1]:6.2f}s  "
                    f"sample {c['sample_s'][-1]:6.2f}s")
        if not r:
            log("warm-up round done")

    peak = {k: probes[k][1] / statistics.median(v) / 1e9 for k, v in peak_s.items()}
    peak_gflops = max(v for k, v in peak.items() if k != "conv3x3_nchw")
    out: dict = {
        "meta": {
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": (torch.cuda.get_device_name(DEVICE) if DEVICE.type == "cuda" else "cpu"),
            "batch_scale": BATCH_SCALE, "inner_calls": INNER,
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "repeats": repeats, "warmup_rounds": 1, "sample_batch": SAMPLE_BATCH * BATCH_SCALE,
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
            "versions": _versions(),
        },
        "peak_gflops": {**{k: round(v, 1) for k, v in peak.items()},
                        "peak": round(peak_gflops, 1)},
        "settings": {},
    }
    for s in settings:
        res: dict = {"nets": {}}
        for c in cases.values():
            if c["setting"] != s:
                continue
            tr, sa = statistics.median(c["train_s"]), statistics.median(c["sample_s"])
            if not c["train_flops"]:  # compiled: the same FLOPs as its eager twin
                twin = cases.get(f"{s}/{c['net'].removesuffix('_compile')}")
                c["train_flops"] = twin["train_flops"] if twin else 0
                c["sample_flops"] = twin["sample_flops"] if twin else 0
            gflops = c["train_flops"] / tr / 1e9
            res["nets"][c["net"]] = {
                "desc": c["desc"], "params": c["params"], "train_batch": c["batch"],
                "train_step_s_median": round(tr, 4),
                "train_step_s_all": [round(v, 4) for v in c["train_s"]],
                "train_images_per_s": round(c["batch"] / tr, 2),
                "train_gflop_per_step": round(c["train_flops"] / 1e9, 2),
                "train_gflops_achieved": round(gflops, 1),
                "train_peak_share": round(gflops / peak_gflops, 3),
                "sample_evals_per_s": round(SAMPLE_BATCH * BATCH_SCALE / sa, 2),
                "sample_gflops_achieved": round(c["sample_flops"] / sa / 1e9, 1),
            }
        nets = res["nets"]
        for what, k in (("train", "train_images_per_s"), ("sample", "sample_evals_per_s")):
            for peer in ("diffusers", "ddpm_pytorch"):
                res[f"{what}_ratio_vs_{peer}"] = round(nets["ours"][k] / nets[peer][k], 3)
            res[f"{what}_ratio_vs_faster_peer"] = min(res[f"{what}_ratio_vs_diffusers"],
                                                      res[f"{what}_ratio_vs_ddpm_pytorch"])
            if "ours_winograd" in nets:
                res[f"{what}_gain_winograd"] = round(
                    nets["ours_winograd"][k] / nets["ours"][k], 3)
                for peer in ("diffusers", "ddpm_pytorch"):
                    res[f"{what}_winograd_ratio_vs_{peer}"] = round(
                        nets["ours_winograd"][k] / nets[peer][k], 3)
            if "ours_nchw" in nets:
                res[f"{what}_gain_channels_last"] = round(nets["ours"][k] / nets["ours_nchw"][k],
                                                          3)
            if "ours_bf16" in nets:
                res[f"{what}_bf16_ratio_vs_diffusers_bf16"] = round(
                    nets["ours_bf16"][k] / nets["diffusers_bf16"][k], 3)
                res[f"{what}_gain_bf16"] = round(nets["ours_bf16"][k] / nets["ours"][k], 3)
            if "ours_bf16_compile" in nets:
                res[f"{what}_compile_ratio_vs_diffusers_compile"] = round(
                    nets["ours_bf16_compile"][k] / nets["diffusers_bf16_compile"][k], 3)
        res["train_peak_share_needed_for_1_3x"] = {
            k: round(v, 3) for k, v in needed_peak_share(res).items()}
        out["settings"][s] = res
    return out


def _versions() -> dict[str, str]:
    v = {}
    for mod in ("diffusers", "denoising_diffusion_pytorch"):
        try:
            from importlib.metadata import version
            v[mod] = version(mod.replace("_", "-"))
        except Exception:  # noqa: BLE001
            v[mod] = "?"
    return v


# ---- the doc -----------------------------------------------------------------------------
def table(res: dict) -> str:
    m, pk = res["meta"], res["peak_gflops"]
    lines = [
        SECTION, "",
        "Our U-Net (`ddpmkit.nets`) against the nets a user would pick instead, at the same",
        "parameter count, timed in one process, interleaved, after a warm-up round, median of",
        f"{m['repeats']} rounds. Produced by:", "",
        "```bash", "make bench   # = .venv-bench/bin/python benchmarks/bench_nets.py "
        "--variants winograd --threads 1",
        f"# this table: {m['command']}", "```", "",
        f"Run {m['date']}: torch {m['torch']}, {m['threads']} threads on {m['cpu_count']} "
        f"cores ({m['cpu']}), diffusers {m['versions']['diffusers']}, "
        f"denoising-diffusion-pytorch {m['versions']['denoising_diffusion_pytorch']}; "
        f"load average {m['loadavg_before'][0]} before, {m['loadavg_after'][0]} after "
        "(the machine is shared: absolute numbers are noisy, the interleaved ratios are what "
        "counts).", "",
        (f"Measured peak: matmul 2048^2 {pk['matmul_2048']} GFLOP/s, channels_last 3x3 conv "
         f"{pk['conv3x3_channels_last']} GFLOP/s (NCHW: {pk['conv3x3_nchw']}); "
         f"peak = {pk['peak']} GFLOP/s." if "matmul_2048" in pk else
         "Measured peak: " + ", ".join(f"{k} {v} GFLOP/s" for k, v in pk.items()) + "."), "",
        "| setting | net | params | train img/s | ours / net | train GFLOP/s | "
        "share of peak | sample evals/s (b64) | ours / net |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, r in res["settings"].items():
        for name, n in r["nets"].items():
            twin = ("ours_bf16_compile" if name.endswith("_bf16_compile") else
                    "ours_bf16" if name.endswith("_bf16") else "ours")
            o = r["nets"].get(twin, r["nets"]["ours"])
            tr_r = o["train_images_per_s"] / n["train_images_per_s"]
            sa_r = o["sample_evals_per_s"] / n["sample_evals_per_s"]
            mine = name.startswith("ours")
            tr = "" if mine else f"**{tr_r:.2f}x**"
            sa = "" if mine else f"{sa_r:.2f}x"
            lines.append(
                f"| {s} b{n['train_batch']} | {name}: {n['desc']} | {n['params'] / 1e6:.2f}M | "
                f"{n['train_images_per_s']:.2f} | {tr} | {n['train_gflops_achieved']:.1f} | "
                f"{100 * n['train_peak_share']:.0f} % | {n['sample_evals_per_s']:.1f} | {sa} |")
    lines += ["", "Guard (the old 1.3x target is retired: at identical layout it needs more than "
              "95 % of peak, docs/benchmarks.md), in this run:", ""]
    for s, r in res["settings"].items():
        ratio, share = r["train_ratio_vs_faster_peer"], r["nets"]["ours"]["train_peak_share"]
        lines.append(
            f"- {s}: training images/s ours / faster peer = {ratio:.2f}x (guard >= 1.0x: "
            f"{'holds' if ratio >= 1.0 else 'BROKEN'}); achieved training FLOP/s = "
            f"{100 * share:.0f} % of peak.")
        if "train_winograd_ratio_vs_diffusers" in r:
            wr = min(r["train_winograd_ratio_vs_diffusers"],
                     r["train_winograd_ratio_vs_ddpm_pytorch"])
            lines.append(
                f"  With `conv3x3='winograd'` (opt-in): ours / faster peer = {wr:.2f}x, "
                f"{r['train_gain_winograd']:.2f}x the direct net in training, "
                f"{r['sample_gain_winograd']:.2f}x in sampling.")
    lines += ["", "JSON: `benchmarks/results/` (keys `train_ratio_vs_diffusers`, "
              "`train_ratio_vs_ddpm_pytorch`, `train_ratio_vs_faster_peer`, `sample_ratio_vs_*`, "
              "`train_peak_share`).", ""]
    return "\n".join(lines)


def needed_peak_share(r: dict, target: float = 1.3) -> dict[str, float]:
    """Per peer: the share of the machine's peak our training step would have to reach to be
    ``target`` x the peer's images/s, at our FLOPs per step and the peer's measured share:
    target * share_peer * flops_ours / flops_peer (> 1 means no implementation of the same
    FLOPs can get there)."""
    n, o = r["nets"], r["nets"]["ours"]
    return {p: target * n[p]["train_peak_share"] * o["train_gflop_per_step"]
            / n[p]["train_gflop_per_step"]
            for p in ("diffusers", "ddpm_pytorch") if n.get(p, {}).get("train_gflop_per_step")}


def write_doc(section: str, notes: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    block = section + ("\n" + notes.strip() + "\n" if notes.strip() else "")
    if SECTION in text:
        head, rest = text.split(SECTION, 1)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


NOTES = """
### Speed work: what was measured, what was kept

Profile of one training step (`torch.profiler`, mnist preset, batch 16, fp32, 1 thread so that
the other jobs on this shared machine do not distort it; ours / diffusers with our layout):

| op (self time) | ours | diffusers |
|---|---:|---:|
| 3x3/1x1 conv backward + forward (oneDNN) | 961 ms | 1013 ms |
| GroupNorm fwd+bwd, SiLU fwd+bwd, adds, cat, copies | 91 ms | 71 ms |
| whole step | 1119 ms | 1143 ms |
| FLOPs per step (`flop_counter`) | 99.0 G | 105.6 G |

The convolutions are ~86 % of the step and already run at the core's matmul speed (about
100 GFLOP/s per core here), in NCHW as in channels_last. So in fp32 eager mode a faster net
has to do fewer FLOPs for the same function, or run its convs in a faster dtype:

- **kept, exact**: the up-sampling `conv3x3(nearest_x2(x))` is computed as four 2x2 convs on
  the low-resolution input, interleaved (sub-pixel identity; 16 instead of 36 multiply-adds
  per low-res pixel and channel pair, same parameters, same function to 1e-6:
  `test_subpixel_upsample_equals_nearest_then_conv`). -6 % training FLOPs on the mnist
  preset (396 vs 423 GFLOP per b64 step)
  and -6 % on cifar10 (1090 vs 1162 GFLOP per b32 step).
- **kept**: in-place time-embedding and residual adds (a conv keeps no output for backward),
  attention on the channels_last buffer viewed as (B, HW, C) tokens without copies, through
  `scaled_dot_product_attention`; no Dropout module when p = 0; no attention at full
  resolution in any preset (digits: only the 2x2 middle; mnist: 7x7; cifar10: Ho's 16x16).
- **channels_last** (`UNetConfig.channels_last`, default on): no measurable gain for a
  training step with this torch (mnist preset, b16, 1 thread: 2.27 s channels_last vs
  2.22 s NCHW, within noise; at 2 threads on the loaded machine the order flipped between
  runs). The conv forward alone (sampling) was faster in channels_last in one 2-thread probe
  (75 vs 38 GFLOP/s, b64 64->64 32x32) and not in others. It stays on by default because it
  costs nothing on CPU and is what GPU tensor cores want; parameters stay contiguous, so
  safetensors saves them. `--variants nchw` measures it in the bench.
- **bf16 autocast** (the trainer's option): a 3x3 conv forward+backward runs 1.85x faster in
  bf16 than in fp32 on this Zen 4 CPU (130 vs 70 GFLOP/s per core, it has avx512_bf16). The
  nets run under `torch.autocast("cpu", dtype=torch.bfloat16)` (test: relative error < 5 %
  against fp32 on a small net). Measured, 28x28x1 b64, 1 thread, load 1.5-2.0
  (`--settings 28x28x1 --variants bf16 --threads 1`, benchmarks/results/nets_cpu_bf16_28.json):
  **bf16 trains 1.67x faster than fp32** (24.98 vs 14.92 img/s; sampling 1.68x), and ours /
  diffusers is 1.05x in fp32 and 1.02x with both under bf16, so bf16 is a real speed-up for the
  user (`ddpmkit train --bf16`; the H200 MNIST model was trained with it) but not an edge over a
  peer that also turns it on. Off by default: bf16 rounds x0_hat to ~3 significant digits,
  which the likelihood evaluation must not see (`ddpmkit eval` always runs float32).
- **torch.compile**: `ddpmkit.train.maybe_compile(net, True)` falls back to eager with a
  warning when compilation fails. Not in the default bench: compiling the three nets twice
  takes minutes on 2 shared cores, and the convs it cannot speed up are 86 % of the step.
- **Winograd convolutions, opt-in** (`UNetConfig(conv3x3="winograd")`, `ddpmkit train
  --conv3x3 winograd`; code in `ddpmkit.nets.winograd`): F(4x4,3x3) computes the same 3x3 conv
  with 4x fewer multiplies (float32 error <= 1.4e-5 of the output's scale against float64,
  about 10x the direct conv's; the whole cifar10 net's output moves by ~5e-6 relative;
  outputs and gradients checked in tests/test_winograd.py and tests/test_nets.py). Two things
  made it pay in plain eager PyTorch on this CPU (`benchmarks/bench_winograd.py --parts policy
  --no-compile`, rows in `benchmarks/results/winograd.json` under `policy`):
  1. the batch goes through in chunks whose transformed tiles stay under 8 MB (`TILE_BYTES`,
     at least 512 tiles a chunk), i.e. in cache: 128->128 at 32x32, b32, forward+backward
     269 ms direct, 299 ms Winograd on the whole batch, 192 ms in chunks (384->128: 770 / 667
     / 561 ms; 128->128 at 64x64, b16: 560 / 809 / 360 ms);
  2. a per-call policy, `winograd_pays`, that uses it only where it was measured faster:
     >= 128 channels in and out at maps of 8x8 and more that fill whole 4x4 tiles
     (forward+backward 1.27-1.85x, forward alone 1.0-1.5x), and 64 channels only in training
     from 64x64 (1.25x; forward alone 0.93x). Everything else stays direct: the first and last
     convs (0.36-0.73x), 64 channels at 28x28 (0.91-1.0x), 14x14 / 7x7 / 9x9 maps that pad to
     whole tiles (0.6-1.07x), 4x4 maps (0.62x). Never on GPU (cuDNN picks its own algorithms),
     in float64, or under bf16 autocast.

  Whole step, the `ours_winograd` rows above (`--variants winograd`): for the cifar10 preset
  (32x32x3) **1.35x the direct net in training** (3.86 vs 2.86 img/s; every round 7.95-8.35 s
  against 11.16-11.25 s) and 1.28x in sampling, so **ours / faster peer = 1.45x with this
  option: the 1.3x target is met at 32x32x3** (1.46x diffusers, 1.45x
  denoising-diffusion-pytorch). For the mnist preset (28x28x1) the policy leaves every conv
  direct (0.996x), so 28x28x1 stays at 1.05x.
  The `ours_winograd` rows' GFLOP/s count the multiplies actually done, so their share of
  peak is not comparable with the others'. Off by default because it changes results in the
  6th significant digit and the default promise is "the same numbers to the last digit";
  it is the setting to use for CPU training of Ho-sized nets. Earlier whole-batch
  measurements (`--parts mnist-step,cifar10-step`): F(2x2,3x3) slower everywhere
  (0.53-0.73x), whole-batch F(4x4) eager 0.84x / 1.13x and under torch.compile 1.12x /
  1.38x (3-4 minutes of compiling on this CPU) for mnist / cifar10.
- **What 1.3x would take**: the "Targets" lines print, for each peer, the share of the
  machine's peak our step would need to be 1.3x that peer with the FLOPs we do with direct
  convolutions. Both settings need 100-105 % against the faster peer, so no implementation of
  the same arithmetic gets there; only doing fewer multiplies for the same function does
  (kept: the sub-pixel up-sampling, -6 %; opt-in: Winograd). At 28x28x1 the mnist preset's
  convs are 64 channels wide at 28x28 and 128 at 14x14 and 7x7, where Winograd does not pay
  on this CPU, so 28x28x1 stays at ~1.05x.
- **shared CPU**: with 2 OpenMP threads on 2 cores that other jobs also use, small
  elementwise ops spend their time waiting at thread barriers (e.g. the fused AdamW step
  of 6.5M parameters: 10 ms on 1 thread, 2 s on 2 threads at load average 6). Check `uptime`
  before benchmarking; the load is recorded in the JSON and above.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (>= 5; default 5)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--out", type=Path, default=None, help="JSON path (default results/nets_<date>)")
    p.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    p.add_argument("--variants", nargs="*", default=[],
                   choices=["nchw", "bf16", "compile", "winograd"],
                   help="extra rows: ours without channels_last; ours and the peers under bf16; "
                        "ours and diffusers under bf16 + torch.compile; ours with "
                        "conv3x3='winograd'")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    p.add_argument("--batch-scale", type=int, default=1,
                   help="multiply the train and sample batches (e.g. 4 on a GPU)")
    p.add_argument("--inner", type=int, default=None,
                   help="calls per timed sample (default 1 on CPU, 20 on a GPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: torch's choice, one per core); on a shared "
                        "machine 1 thread avoids OpenMP barrier stalls")
    p.add_argument("--doc-from", type=Path, default=None,
                   help="only re-render docs/benchmarks.md from a results JSON")
    args = p.parse_args(argv)
    if args.doc_from:
        write_doc(table(json.loads(args.doc_from.read_text())), NOTES)
        print(f"updated {DOC} from {args.doc_from}")
        return 0
    if args.repeats < 5:
        p.error("--repeats must be >= 5 (medians of fewer rounds are too noisy here)")

    def log(msg: str) -> None:
        print(msg, flush=True)

    global DEVICE, INNER, BATCH_SCALE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is visible to torch")
    INNER = args.inner or (20 if DEVICE.type == "cuda" else 1)
    BATCH_SCALE = args.batch_scale
    if args.threads:
        torch.set_num_threads(args.threads)
    log(f"load average before: {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} threads")
    res = run(args.repeats, args.settings, log, tuple(args.variants))
    out = args.out or ROOT / "benchmarks" / "results" / (
        f"nets_{dt.datetime.now():%Y%m%d_%H%M%S}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    section = table(res)
    print("\n" + section)
    for s, r in res["settings"].items():
        print(f"{s}: train_ratio_vs_faster_peer={r['train_ratio_vs_faster_peer']}  "
              f"ours peak share={r['nets']['ours']['train_peak_share']}")
    print(f"wrote {out}")
    if not args.no_doc and set(args.settings) == set(SETTINGS) and DEVICE.type == "cpu":
        write_doc(section, NOTES)
        print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
