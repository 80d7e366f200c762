"""Does Winograd (F(2x2,3x3), F(4x4,3x3) in plain PyTorch ops) beat oneDNN's direct 3x3 conv?

    python benchmarks/bench_winograd.py [--repeats 5] [--no-compile]
        [--parts mnist,mnist-step,cifar10]   # + cifar10-step: the 35.7M net's step (slow)
    python benchmarks/bench_winograd.py --parts policy --no-compile   # the "auto" policy

One thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)). Parts, each interleaved (every
round runs every variant once, in turn), one warm-up round, median over ``--repeats``:

1. Every distinct 3x3 stride-1 conv shape of the ``mnist`` preset U-Net (batch 64, 28x28)
   and of the ``cifar10`` preset (batch 32, 32x32), found by hooking a forward pass, with how
   often it runs per forward. Forward + backward (grad of input, weight, bias) of
   nn.Conv2d on a channels_last input vs WinogradConv2d m=2 and m=4 (eager, transforms
   as matmuls) and m=2, m=4 with ``torch.compile`` on ``winograd_sums.winograd_conv3x3_sums``
   (beside this file: the transforms written as sums, which Inductor fuses; one graph per
   shape, compile time reported). Also
   the three batched matmuls of the Winograd algorithm alone (forward V@U, backward dM@U^T
   and V^T@dM), so transform time = Winograd total - GEMM time. The float32 error of each
   m against a float64 F.conv2d is recorded per shape.
2. The whole training step of the ``mnist`` preset (forward + MSE + backward + AdamW),
   the stock net vs copies whose 3x3 stride-1 convs with >= 16 channels in and out are
   replaced (module swap here, the net's code untouched) by WinogradConv2d; optionally
   (``cifar10-step``) the same for the ``cifar10`` preset, m=4 only. ``mnist-auto`` /
   ``cifar10-auto``: eager only, stock vs F(4x4) everywhere vs F(4x4) with
   ``policy="auto"`` (only the shapes where it was measured faster, see
   ``ddpmkit.nets.winograd.winograd_pays``; the rest run the direct conv).
3. ``policy``: every 3x3 shape of both presets and a few more (64x64, 128x128, 9x9 maps),
   forward + backward and forward alone, direct vs F(4x4) in cache-sized chunks (the default)
   vs F(4x4) on the whole batch, with the policy's decision: the evidence for
   ``winograd_pays``.

Prints markdown tables; writes benchmarks/results/winograd.json (parts run now replace
those of an existing file, the others are kept).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from winograd_sums import winograd_conv3x3_sums  # noqa: E402 (benchmarks/, beside this file)

from ddpmkit.nets import build_net, count_parameters, preset  # noqa: E402
from ddpmkit.nets.winograd import (  # noqa: E402
    AUTO_MIN_CHANNELS,
    AUTO_MIN_SIDE,
    AUTO_THIN,
    WinogradConv2d,
    winograd_conv3x3,
    winograd_pays,
)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "winograd.json"
SETTINGS = {"mnist": (1, 28, 64), "cifar10": (3, 32, 32)}  # preset: (C, H=W, batch)
MIN_CH = 16  # swap only convs with at least this many channels in and out


def load() -> float:
    return round(os.getloadavg()[0], 2)


def conv_shapes(name: str) -> Counter:
    """(N, C_in, C_out, H, W) -> calls per forward, for the 3x3 stride-1 convs of a preset."""
    C, H, B = SETTINGS[name]
    net = build_net(preset(name))
    seen: Counter = Counter()

    def hook(mod, inp, out):
        if mod.kernel_size == (3, 3) and mod.stride == (1, 1):
            x = inp[0]
            seen[(B, x.shape[1], mod.out_channels, x.shape[2], x.shape[3])] += 1

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(torch.randn(2, C, H, H), torch.randint(1, 1001, (2,)))
    for h in hs:
        h.remove()
    return seen


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each fn, after one warm-up round, rounds interleaved."""
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats + 1):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            dt = time.perf_counter() - t0
            if r:
                ts[k].append(dt)
    return {k: statistics.median(v) for k, v in ts.items()}


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.double() - ref).abs().max() / ref.abs().max())


def bench_shape(shape, repeats: int, compiled) -> dict:
    N, C, O, H, W = shape
    torch.manual_seed(0)
    conv = nn.Conv2d(C, O, 3, padding=1)
    x = torch.randn(N, C, H, W).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    gy = torch.randn(N, O, H, W).contiguous(memory_format=torch.channels_last)
    w, b = conv.weight, conv.bias

    def fwd_bwd(f):
        def run():
            y = f()
            y.backward(gy)
            x.grad = w.grad = b.grad = None
        return run

    def gemms(m):  # the three batched matmuls of F(m x m, 3x3) fwd + bwd, same sizes
        a2, T = (m + 2) ** 2, N * (-(-H // m)) * (-(-W // m))
        V, U, dM = torch.randn(a2, T, C), torch.randn(a2, C, O), torch.randn(a2, T, O)

        def run():
            torch.bmm(V, U)
            torch.bmm(dM, U.transpose(1, 2))
            torch.bmm(V.transpose(1, 2), dM)
        return run, 3 * 2.0 * a2 * T * C * O

    fns = {"conv": fwd_bwd(lambda: conv(x)),
           "wino2": fwd_bwd(lambda: winograd_conv3x3(x, w, b, 2)),
           "wino4": fwd_bwd(lambda: winograd_conv3x3(x, w, b, 4))}
    g2, fl2 = gemms(2)
    g4, fl4 = gemms(4)
    fns["gemm2"], fns["gemm4"] = g2, g4
    compile_s = {}
    if compiled is not None:
        for m in (2, 4):
            t0 = time.perf_counter()
            fwd_bwd(lambda m=m: compiled(x, w, b, m))()
            compile_s[m] = round(time.perf_counter() - t0, 1)
            fns[f"wino{m}c"] = fwd_bwd(lambda m=m: compiled(x, w, b, m))
    med = interleaved(fns, repeats)

    with torch.no_grad():
        ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
        err = {f"err_m{m}": rel_err(winograd_conv3x3(x, w, b, m), ref) for m in (2, 4)}
        err["err_direct"] = rel_err(conv(x), ref)
    direct_flops = 3 * 2.0 * N * H * W * C * O * 9
    ms = {k: round(v * 1e3, 2) for k, v in med.items()}
    out = {"shape": {"N": N, "C_in": C, "C_out": O, "H": H, "W": W}, "ms": ms,
           "direct_gflops": round(direct_flops / med["conv"] / 1e9, 1),
           "gemm2_gflops": round(fl2 / med["gemm2"] / 1e9, 1),
           "gemm4_gflops": round(fl4 / med["gemm4"] / 1e9, 1),
           "transform_ms_m2": round((med["wino2"] - med["gemm2"]) * 1e3, 2),
           "transform_ms_m4": round((med["wino4"] - med["gemm4"]) * 1e3, 2),
           "speedup_m2": round(med["conv"] / med["wino2"], 3),
           "speedup_m4": round(med["conv"] / med["wino4"], 3),
           **{k: float(f"{v:.3g}") for k, v in err.items()}, "load1": load()}
    if compiled is not None:
        for m in (2, 4):
            out[f"speedup_m{m}_compiled"] = round(med["conv"] / med[f"wino{m}c"], 3)
            out[f"transform_ms_m{m}_compiled"] = round(
                (med[f"wino{m}c"] - med[f"gemm{m}"]) * 1e3, 2)
        out["compile_s"] = compile_s
    return out


def swap(net: nn.Module, m: int, fn=None, policy: str = "always") -> int:
    """Replace 3x3 stride-1 convs by WinogradConv2d in place: those with >= MIN_CH channels
    in and out for policy "always", every one for "auto" (the policy picks per call)."""
    n = 0
    min_ch = MIN_CH if policy == "always" else 1
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if (type(child) is nn.Conv2d and child.kernel_size == (3, 3)
                    and child.stride == (1, 1) and child.padding == (1, 1)
                    and min(child.in_channels, child.out_channels) >= min_ch):
                new = WinogradConv2d.from_conv(child, m, policy)
                if fn is not None:
                    new.forward = lambda x, c=new: fn(x, c.weight, c.bias, c.m)
                setattr(parent, name, new)
                n += 1
    return n


def bench_step(name: str, repeats: int, compiled, ms_=(2, 4), auto: bool = False) -> dict:
    C, H, B = SETTINGS[name]
    torch.manual_seed(0)
    stock = build_net(preset(name))
    x = torch.randn(B, C, H, H).contiguous(memory_format=torch.channels_last)
    t = torch.randint(1, 1001, (B,))
    nets = {"stock": stock}
    for m in ms_:
        nets[f"wino{m}"] = copy.deepcopy(stock)
        n_swapped = swap(nets[f"wino{m}"], m)
    if auto:  # F(4x4) only where winograd_pays() says so (eager, per call)
        nets["wino4auto"] = copy.deepcopy(stock)
        swap(nets["wino4auto"], 4, policy="auto")
    if compiled is not None:
        for m in ms_:
            nets[f"wino{m}c"] = copy.deepcopy(stock)
            swap(nets[f"wino{m}c"], m, compiled)
    # the float32 stock net is the reference (its own error ~1e-7); grad mode stays on, so
    # the compiled variant reuses its training graphs
    for n in nets.values():
        n.eval()  # no dropout for the comparison
    ref = stock(x, t).detach().double()
    errs = {k: float(f"{rel_err(n(x, t).detach(), ref):.3g}") for k, n in nets.items()}
    for n in nets.values():
        n.train()

    def step_fn(net):
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4, fused=True)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = (net(x, t) - x).square().mean()
            loss.backward()
            opt.step()
        return step

    fns = {k: step_fn(n) for k, n in nets.items()}
    t0 = time.perf_counter()
    for f in fns.values():  # compiles the per-shape graphs of the compiled variant
        f()
    warm_s = round(time.perf_counter() - t0, 1)
    med = interleaved(fns, repeats)
    return {"batch": B, "params": count_parameters(stock), "convs_swapped": n_swapped,
            "ms": {k: round(v * 1e3, 1) for k, v in med.items()},
            "images_per_s": {k: round(B / v, 1) for k, v in med.items()},
            "speedup": {k: round(med["stock"] / v, 3) for k, v in med.items() if k != "stock"},
            "output_rel_err_vs_stock_fp32": errs, "first_steps_s": warm_s, "load1": load(),
            **({"auto_policy": {"min_channels": AUTO_MIN_CHANNELS, "min_side": AUTO_MIN_SIDE,
                                "thin_channels_pixels": AUTO_THIN}} if auto else {})}


EXTRA_SHAPES = [  # (N, C_in, C_out, H, W) beyond the presets: larger maps, odd sizes
    (16, 64, 64, 64, 64), (16, 128, 128, 64, 64), (8, 64, 64, 128, 128), (64, 64, 64, 9, 9),
]


def bench_policy(repeats: int) -> list[dict]:
    """Per 3x3 shape (both presets + EXTRA_SHAPES): forward + backward and forward alone
    (inference_mode), direct conv vs F(4x4) chunked (the default) vs F(4x4) in one piece, and
    what ``winograd_pays`` decides for each; this is the evidence behind the policy."""
    shapes = [s for p in SETTINGS for s in conv_shapes(p)] + EXTRA_SHAPES
    rows = []
    for shape in dict.fromkeys(shapes):
        row = policy_row(*shape, repeats)
        rows.append(row)
        print(f"| {','.join(map(str, shape))} | {row['fwd_bwd_ms']['direct']} | "
              f"{row['fwd_bwd_ms']['w4']} | {row['fwd_bwd_ms']['w4_one_piece']} | "
              f"{row['speedup_fwd_bwd']} | {row['fwd_ms']['direct']} | {row['fwd_ms']['w4']} | "
              f"{row['speedup_fwd']} | {'W' if row['policy_train'] else '-'}"
              f"{'W' if row['policy_inference'] else '-'} | {row['load1']} |", flush=True)
    return rows


def policy_row(N: int, C: int, O: int, H: int, W: int, repeats: int) -> dict:
    x = torch.randn(N, C, H, W).contiguous(memory_format=torch.channels_last)
    xg = x.clone().requires_grad_()
    w = (torch.randn(O, C, 3, 3) / (3 * C**0.5)).requires_grad_()
    b = torch.randn(O, requires_grad=True)
    gy = torch.randn(N, O, H, W).contiguous(memory_format=torch.channels_last)
    variants = {"direct": lambda xx: F.conv2d(xx, w, b, padding=1),
                "w4": lambda xx: winograd_conv3x3(xx, w, b, 4),
                "w4_one_piece": lambda xx: winograd_conv3x3(xx, w, b, 4, tile_bytes=None)}

    def fwd_bwd(f):
        return lambda: f(xg).backward(gy)

    def fwd(f):
        def run():
            with torch.inference_mode():
                f(x)
        return run

    tb = interleaved({k: fwd_bwd(f) for k, f in variants.items()}, repeats)
    tf = interleaved({k: fwd(f) for k, f in variants.items()}, repeats)
    return {"shape": {"N": N, "C_in": C, "C_out": O, "H": H, "W": W},
            "fwd_bwd_ms": {k: round(v * 1e3, 1) for k, v in tb.items()},
            "fwd_ms": {k: round(v * 1e3, 1) for k, v in tf.items()},
            "speedup_fwd_bwd": round(tb["direct"] / tb["w4"], 2),
            "speedup_fwd": round(tf["direct"] / tf["w4"], 2),
            "policy_train": winograd_pays(x, O, backward=True),
            "policy_inference": winograd_pays(x, O, backward=False), "load1": load()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--parts", default="mnist,mnist-step,cifar10",
                    help="comma list of mnist, mnist-step, cifar10, cifar10-step, "
                         "mnist-auto, cifar10-auto, policy")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if args.repeats < 5:
        ap.error("--repeats must be >= 5")
    torch.set_num_threads(1)
    compiled = None
    if not args.no_compile:
        torch._dynamo.config.recompile_limit = 1024  # one graph per conv shape and m
        torch._dynamo.config.accumulated_recompile_limit = 4096
        compiled = torch.compile(winograd_conv3x3_sums, dynamic=False)
    res: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    res.update({"torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(), "repeats": args.repeats,
                "load_start": os.getloadavg()})
    res.setdefault("shapes", {})
    parts = args.parts.split(",")
    hdr = ("| preset | N,Cin->Cout,HxW | calls/fwd | conv ms | w2 ms | w4 ms | w2c ms | "
           "w4c ms | x w2 | x w4 | x w2c | x w4c | conv GF/s | GEMM2 GF/s (ms) | "
           "GEMM4 GF/s (ms) | err m2 | err m4 | load |")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after each part, so a partial run keeps what it measured
        res["load_end"] = os.getloadavg()
        args.out.write_text(json.dumps(res, indent=1) + "\n")

    def bench_preset_shapes(p: str) -> None:
        rows = []
        for shape, calls in sorted(conv_shapes(p).items(), key=lambda kv: -kv[0][3]):
            r = bench_shape(shape, args.repeats, compiled)
            r["calls_per_forward"] = calls
            rows.append(r)
            ms = r["ms"]
            N, C, O, H, W = shape
            print(f"| {p} | {N},{C}->{O},{H}x{W} | {calls} | {ms['conv']} | {ms['wino2']} | "
                  f"{ms['wino4']} | {ms.get('wino2c', '-')} | {ms.get('wino4c', '-')} | "
                  f"{r['speedup_m2']} | {r['speedup_m4']} | "
                  f"{r.get('speedup_m2_compiled', '-')} | {r.get('speedup_m4_compiled', '-')} | "
                  f"{r['direct_gflops']} | {r['gemm2_gflops']} ({ms['gemm2']}) | "
                  f"{r['gemm4_gflops']} ({ms['gemm4']}) | {r['err_m2']:.1e} | "
                  f"{r['err_m4']:.1e} | {r['load1']} |", flush=True)
        tot = {k: round(sum(r["ms"][k] * r["calls_per_forward"] for r in rows
                            if min(r["shape"]["C_in"], r["shape"]["C_out"]) >= MIN_CH), 1)
               for k in rows[0]["ms"]}
        res["shapes"][p] = {"convs": rows, "weighted_ms_swappable": tot}
        print(f"\n{p}: fwd+bwd ms of the swappable 3x3 convs, summed by calls per forward: "
              + ", ".join(f"{k} {v:.0f}" for k, v in tot.items()) + "\n", flush=True)
        save()

    for p in ("mnist", "cifar10"):
        if p in parts:
            bench_preset_shapes(p)
        for part, key in ((f"{p}-step", f"{p}_train_step"),
                          (f"{p}-auto", f"{p}_train_step_auto")):
            if part not in parts:
                continue
            if part.endswith("-auto"):  # eager: stock, F(4x4) everywhere, F(4x4) by policy
                step = bench_step(p, args.repeats, None, (4,), auto=True)
            else:
                step = bench_step(p, args.repeats, compiled, (2, 4) if p == "mnist" else (4,))
            res[key] = step
            print(f"| {p} train step (batch {step['batch']}) | ms | images/s | speed-up | "
                  "out rel err |")
            print("|---|---|---|---|---|")
            for k, v in step["ms"].items():
                print(f"| {k} | {v} | {step['images_per_s'][k]} | "
                      f"{step['speedup'].get(k, 1.0)} | "
                      f"{step['output_rel_err_vs_stock_fp32'][k]:.1e} |")
            print(f"load {step['load1']}\n", flush=True)
            save()
    if "policy" in parts:
        print("\n| N,Cin->Cout,HxW | fwd+bwd direct ms | w4 | w4 one piece | x | fwd direct ms "
              "| w4 | x | policy train/infer | load |")
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
        res["policy"] = bench_policy(args.repeats)
        save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
