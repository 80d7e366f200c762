"""Denoiser networks: ``net(x_t, t) -> tensor shaped like x_t``, t int64 (B,) in 1..T.

nn.Modules only, no diffusion maths (the Denoiser interprets the output). Configuration is a
frozen dataclass saved as JSON (``config_to_dict`` / ``config_from_dict``); presets are plain
functions in a dict.

Speed knobs (measured in docs/benchmarks.md):
- channels_last: on by default in :class:`UNetConfig` (``channels_last=True``). The U-Net turns
  its input into channels_last itself and keeps its parameters contiguous (safetensors saves
  them as they are); feeding it channels_last batches saves one copy per step. On CPU this is
  the largest single win (oneDNN 3x3 convs run ~3-4x faster than in NCHW). Keep it on on GPU
  too (tensor cores prefer NHWC).
- bf16: the nets run under ``torch.autocast(device, dtype=torch.bfloat16)``; the step
  embedding stays float32 (sinusoids of t up to 1000 need it).
- torch.compile with a clean fallback to eager: ``ddpmkit.train.maybe_compile`` (runtime code).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from ..errors import InputError
from .embeddings import TimestepEmbedding, sinusoidal_embedding
from .mlp import MLP, MLPConfig
from .unet import UNet, UNetConfig

NetConfig = UNetConfig | MLPConfig

_KINDS: dict[str, type] = {"unet": UNetConfig, "mlp": MLPConfig}


def _digits(**kw: Any) -> NetConfig:
    # 8x8x1 (sklearn digits): 8 -> 4 -> 2, attention only in the 2x2 middle (cheap); 1.5M.
    return UNetConfig(**{"in_channels": 1, "ch": 32, "ch_mult": (1, 2, 2), "num_res_blocks": 2,
                         "attn_levels": (), "mid_attn": True, "norm_groups": 8, **kw})


def _mnist(**kw: Any) -> NetConfig:
    # 28x28x1: 28 -> 14 -> 7, attention at 7x7 (level 2) and in the middle.
    return UNetConfig(**{"in_channels": 1, "ch": 64, "ch_mult": (1, 2, 2), "num_res_blocks": 2,
                         "attn_levels": (2,), "mid_attn": True, **kw})


def _cifar10(**kw: Any) -> NetConfig:
    # Ho et al.'s CIFAR-10 model: ch 128, mult (1,2,2,2), 2 blocks, attention at 16x16,
    # dropout 0.1: 35.7M parameters.
    return UNetConfig(**{"in_channels": 3, "ch": 128, "ch_mult": (1, 2, 2, 2),
                         "num_res_blocks": 2, "attn_levels": (1,), "mid_attn": True,
                         "dropout": 0.1, **kw})


def _mlp2d(**kw: Any) -> NetConfig:
    return MLPConfig(**{"dim": 2, "hidden": 256, "depth": 3, **kw})


_PRESETS: dict[str, Callable[..., NetConfig]] = {
    "digits": _digits, "mnist": _mnist, "cifar10": _cifar10, "mlp2d": _mlp2d,
}
PRESETS: tuple[str, ...] = tuple(_PRESETS)


def preset(name: str, **overrides: Any) -> NetConfig:
    """The config of a named preset, fields overridden by keyword (e.g. ``T=4000``)."""
    if name not in _PRESETS:
        raise InputError(f"unknown net preset {name!r}; choose one of {', '.join(PRESETS)}")
    cls = UNetConfig if name != "mlp2d" else MLPConfig
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(unknown)} for preset {name!r}; "
                         f"valid: {', '.join(sorted(names))}")
    return _PRESETS[name](**overrides)


def build_net(cfg: NetConfig) -> nn.Module:
    """The network of a config: ``net(x_t, t)`` with t int64 (B,) in 1..cfg.T."""
    if isinstance(cfg, UNetConfig):
        return UNet(cfg)
    if isinstance(cfg, MLPConfig):
        return MLP(cfg)
    raise InputError(f"build_net expects a UNetConfig or MLPConfig; got {type(cfg).__name__}")


def config_to_dict(cfg: NetConfig) -> dict[str, Any]:
    """JSON-able dict of a config with its ``"kind"`` ("unet" | "mlp"); tuples become lists."""
    kind = {UNetConfig: "unet", MLPConfig: "mlp"}.get(type(cfg))
    if kind is None:
        raise InputError(f"not a net config: {type(cfg).__name__}")
    d: dict[str, Any] = {"kind": kind}
    for k, v in dataclasses.asdict(cfg).items():
        d[k] = list(v) if isinstance(v, tuple) else v
    return d


def config_from_dict(d: dict[str, Any]) -> NetConfig:
    """Inverse of :func:`config_to_dict`; unknown kinds or keys raise InputError naming them."""
    if not isinstance(d, dict):
        raise InputError(f"a net config must be a JSON object; got {type(d).__name__}")
    kind = d.get("kind")
    if kind not in _KINDS:
        raise InputError(f"unknown net kind {kind!r}; expected one of {', '.join(_KINDS)}")
    cls = _KINDS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    fields = {k: v for k, v in d.items() if k != "kind"}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(unknown)} in {kind} config; "
                         f"valid: {', '.join(sorted(names))}")
    return cls(**fields)


def count_parameters(net: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


__all__ = [
    "MLP", "MLPConfig", "PRESETS", "TimestepEmbedding", "UNet", "UNetConfig", "build_net",
    "config_from_dict", "config_to_dict", "count_parameters", "preset",
    "sinusoidal_embedding",
]
