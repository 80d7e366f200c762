"""Train the digits feature net behind FD, reproducibly, and write the bundled weights.

    python -m ddpmkit.metrics.train_feature_net            # writes src/ddpmkit/assets/...
    python -m ddpmkit.metrics.train_feature_net --check    # retrain, compare with the shipped file

Recipe (fixed): the digits train split (1347 images, x = v/8 - 1), random shifts of up to one
pixel (background -1 padding), AdamW (lr 2e-3, weight decay 1e-4, cosine decay to 0),
batch 64, 40 epochs, seed 0, one CPU thread and deterministic algorithms, so a rerun with the
same torch build gives the same weights bit for bit. The test split (450 images) is only used
to report the accuracy and the FD floor, both stored in the file's metadata.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .fd import (
    FEATURE_NET_ARCH,
    FEATURE_NET_FILE,
    DigitsFeatureNet,
    digits_features,
    frechet_distance_from_stats,
    gaussian_stats,
)

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "assets" / FEATURE_NET_FILE
COMMAND = "python -m ddpmkit.metrics.train_feature_net"


def random_shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Translate each (1, 8, 8) image by up to ``max_shift`` pixels; new pixels are -1."""
    b, _, h, w = x.shape
    k = 2 * max_shift + 1
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy = torch.randint(0, k, (b,), generator=g)
    dx = torch.randint(0, k, (b,), generator=g)
    out = torch.empty_like(x)
    for i in range(k):
        for j in range(k):
            m = (dy == i) & (dx == j)
            out[m] = padded[m, :, i:i + h, j:j + w]
    return out


@torch.no_grad()
def accuracy(net: DigitsFeatureNet, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((net(x).argmax(1) == y).double().mean())


def train_feature_net(seed: int = 0, epochs: int = 40, batch_size: int = 64, lr: float = 2e-3,
                      weight_decay: float = 1e-4) -> tuple[DigitsFeatureNet, dict]:
    """Train on the digits train split; return the net (eval mode) and its record."""
    from ..data.digits import load_digits_dataset

    data = load_digits_dataset()
    x, y = data.train, data.train_labels
    assert y is not None and data.test is not None and data.test_labels is not None
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        net = DigitsFeatureNet()
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(len(x) / batch_size)
        total = epochs * steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
        t0 = time.perf_counter()
        for _ in range(epochs):
            net.train()
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), batch_size):
                idx = perm[i:i + batch_size]
                loss = F.cross_entropy(net(random_shift(x[idx], g)), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        net.eval().requires_grad_(False)
        seconds = time.perf_counter() - t0
        mu_r, s_r = gaussian_stats(digits_features(x, net=net))
        mu_t, s_t = gaussian_stats(digits_features(data.test, net=net))
        record = {
            "arch": FEATURE_NET_ARCH, "config": json.dumps({"width": 32, "feature_dim": 64}),
            "seed": str(seed), "epochs": str(epochs), "batch_size": str(batch_size),
            "lr": str(lr), "weight_decay": str(weight_decay),
            "train_accuracy": f"{accuracy(net, x, y):.6f}",
            "test_accuracy": f"{accuracy(net, data.test, data.test_labels):.6f}",
            "fd_floor": f"{frechet_distance_from_stats(mu_t, s_t, mu_r, s_r):.6f}",
            "train_seconds": f"{seconds:.1f}", "torch": torch.__version__, "command": COMMAND,
        }
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
    return net, record


def save_feature_net(net: DigitsFeatureNet, record: dict, path: str | Path) -> None:
    """Write the weights + record as safetensors, atomically."""
    from safetensors.torch import save_file

    from ..io import atomic_write

    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=record))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=COMMAND, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"weights file (default {DEFAULT_OUT})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--check", action="store_true",
                   help="do not write; retrain and compare with the shipped weights")
    args = p.parse_args(argv)
    net, record = train_feature_net(seed=args.seed, epochs=args.epochs)
    print(json.dumps(record, indent=2))
    if args.check:
        from safetensors.torch import load_file

        shipped = load_file(str(DEFAULT_OUT))
        diff = max(float((shipped[k] - v).abs().max()) for k, v in net.state_dict().items())
        print(f"max |weight difference| vs {DEFAULT_OUT}: {diff:.3g}"
              + ("" if diff == 0 else " (not bit-identical: another torch build or CPU?)"))
        return 0 if diff == 0 else 1
    save_feature_net(net, record, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
