"""diffusers interop, both ways, offline: a ddpmkit run as a diffusers folder, and a diffusers
``UNet2DModel`` + ``DDPMScheduler`` folder as a ddpmkit Denoiser (for ``ddpmkit eval``).

Export (:func:`export_diffusers`) writes, without importing diffusers::

    OUT/unet/config.json, OUT/unet/diffusion_pytorch_model.safetensors   # UNet2DModel
    OUT/scheduler/scheduler_config.json                                  # DDPMScheduler
    OUT/model_index.json                                                 # DDPMPipeline
    OUT/ddpmkit_export.json                                              # where it came from

ddpmkit's U-Net has UNet2DModel's layout block for block (conv_in; per level ResnetBlock2D's
with attention where ``attn_levels`` says, a stride-2 conv; the mid block; the mirror path with
``num_res_blocks + 1`` blocks on [h, skip] and nearest-x2 + conv; GroupNorm, SiLU, conv_out),
so the weights map one to one by name; the fused ``qkv`` splits into ``to_q``, ``to_k``, ``to_v``.

Time: ddpmkit's net takes t = 1..T and embeds s = t * 1000 / T; diffusers' schedulers count
k = t - 1 = 0..T-1 and hand k to the UNet. The exported UNet therefore maps k to the embedding
of t = k + 1, exactly, in one of two ways (``time_embedding``):
- ``"positional"`` (when T = 1000 and max_period = 10000, so that s = t): diffusers' sinusoids
  [sin(k w_i), cos(k w_i)] (``flip_sin_to_cos=False``, ``freq_shift=0``) and, folded into the
  first linear layer, the rotation by one step that turns them into [sin((k+1) w_i),
  cos((k+1) w_i)]: W' = W R. Works with every diffusers scheduler, fractional timesteps too.
- ``"learned"`` (any T): ``time_embedding_type="learned"``, a table whose row k is ddpmkit's
  own embedding of t = k + 1, bit for bit. Integer timesteps only (DDPM, DDIM, DPM-Solver,
  UniPC; not Euler/Heun, which pass fractional ones).

Schedule: DDPMScheduler keeps float32 tables. ddpmkit's schedules (default ``logsnr_linear``)
have no diffusers ``beta_schedule``, so the scheduler gets ``trained_betas``, a float32 copy of
beta_1..beta_T. That loses: each beta's float32 rounding (relative 6e-8), and diffusers
recomputes alpha_bar = cumprod(1 - beta) in float32, which near t = 1 (alpha_bar close to 1)
leaves 1 - alpha_bar with few digits: the export records the largest log-SNR error of that
float32 chain (``float32_chain`` in ddpmkit_export.json): 1.0e-4 for the digits' default chain
(log-SNR 7.7 .. -9), 1.7e-4 for Ho's linear one, but 0.094 (1 - alpha_bar off by 10 %, near
t = 17) for 8-bit images' log-SNR 13.3 .. -9. A chain whose float32 copy is not a chain at
all (a beta that rounds to 0 or 1, 1 - alpha_bar = 0 or alpha_bar_T = 0 in float32) is refused.

Refused (InputError naming why): the ``mu`` and ``edm`` outputs (no diffusers
``prediction_type``), Fourier input features (UNet2DModel has no input features), an MLP net,
several attention heads of different widths, ``ch_mult[0] != 1`` (UNet2DModel's conv_in has the
first level's width), image sizes that do not halve exactly at every level (UNet2DModel
upsamples by exactly 2).

Import (:func:`load_diffusers`): a local folder with ``unet/`` (safetensors only: nothing is
loaded with pickle) and ``scheduler/``; the UNet becomes the Denoiser's net with t -> k = t - 1,
``prediction_type`` its parameterization, and ddpmkit's float64 chain is built from the
scheduler's (float32) betas by :func:`ddpmkit.schedules.from_betas`. The result has the fields
:func:`ddpmkit.evaluate.eval_bpd` and ``eval_samples`` read, so ``ddpmkit eval --diffusers``
runs the one ELBO estimator on it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .denoiser import Denoiser
from .errors import InputError
from .io import atomic_write_json, sha256_file
from .nets import UNetConfig, count_parameters
from .nets.embeddings import TIME_SCALE, sinusoidal_embedding
from .schedules import NoiseSchedule, from_betas

TimeEmbedding = Literal["auto", "positional", "learned"]
TIME_EMBEDDINGS: tuple[str, ...] = ("auto", "positional", "learned")
#: ddpmkit parameterization -> diffusers prediction_type (mu and edm have none)
PREDICTION_TYPES: dict[str, str] = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
#: the diffusers release whose file format this module writes and was tested against
DIFFUSERS_FORMAT = "0.42.1"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
EXPORT_INFO = "ddpmkit_export.json"


# ---- export: checks ----------------------------------------------------------------------
def export_refusal(cfg: Any, parameterization: str, shape: tuple[int, ...]) -> str | None:
    """Why a run cannot be written as a diffusers UNet2DModel, or None if it can."""
    if parameterization not in PREDICTION_TYPES:
        return (f"the {parameterization!r} output has no diffusers prediction_type (only "
                + ", ".join(f"{k} -> {v}" for k, v in PREDICTION_TYPES.items()) + " map)")
    if not isinstance(cfg, UNetConfig):
        return f"only U-Net runs map to UNet2DModel; this run's net is {type(cfg).__name__}"
    if cfg.fourier_frequencies:
        return (f"the net stacks Fourier input features (frequencies "
                f"{', '.join(f'{f:g}' for f in cfg.fourier_frequencies)}) onto x_t and "
                "UNet2DModel has no input features; train with --fourier-features none")
    if cfg.ch_mult[0] != 1:
        return (f"ch_mult starts at {cfg.ch_mult[0]}: UNet2DModel's conv_in and step embedding "
                "have the first level's width, ddpmkit's have ch")
    if cfg.num_heads > 1 and len(set(_attended_widths(cfg))) > 1:
        return (f"{cfg.num_heads} attention heads on widths {sorted(set(_attended_widths(cfg)))}:"
                " UNet2DModel has one head size for every block")
    _, h, w = shape
    f = 2 ** (len(cfg.ch_mult) - 1)
    if h % f or w % f:
        return (f"{h}x{w} images do not halve exactly {len(cfg.ch_mult) - 1} times; UNet2DModel "
                "upsamples by exactly 2 (ddpmkit resizes to the skip's size)")
    return None


def _attended_widths(cfg: UNetConfig) -> list[int]:
    widths = [cfg.ch * m for m in cfg.ch_mult]
    return [widths[lv] for lv in cfg.attn_levels] + ([widths[-1]] if cfg.mid_attn else [])


def resolve_time_embedding(cfg: UNetConfig, time_embedding: TimeEmbedding) -> str:
    """``auto`` -> positional when the sinusoids coincide (T = 1000, max_period 10000), else
    learned; ``positional`` is refused where they do not."""
    positional_ok = cfg.T == TIME_SCALE and cfg.max_period == 10000.0
    if time_embedding == "auto":
        return "positional" if positional_ok else "learned"
    if time_embedding == "positional":
        if not positional_ok:
            raise InputError(f"--time-embedding positional needs T = 1000 and max_period 10000 "
                             f"(ddpmkit embeds t * 1000 / T; diffusers embeds the raw step); "
                             f"this run has T = {cfg.T}, max_period {cfg.max_period:g}: use "
                             "learned")
        return "positional"
    if time_embedding == "learned":
        return "learned"
    raise InputError(f"unknown time embedding {time_embedding!r}; choose one of "
                     f"{', '.join(TIME_EMBEDDINGS)}")


def float32_chain(schedule: NoiseSchedule) -> dict[str, Any]:
    """What diffusers' float32 copy of the betas makes of the chain: its alpha_bar =
    cumprod(1 - beta) in float32, and the largest errors against the float64 chain.
    ``valid`` is False (with ``why``) where the float32 copy is no chain at all."""
    b32 = schedule.beta[1:].to(torch.float32)
    ab32 = torch.cumprod(1.0 - b32, dim=0)
    omab32 = 1.0 - ab32
    out: dict[str, Any] = {"valid": True, "why": None}
    if (b32 <= 0).any() or (b32 >= 1).any():
        k = int(torch.nonzero((b32 <= 0) | (b32 >= 1)).flatten()[0])
        out.update(valid=False, why=f"beta_{k + 1} = {schedule.beta[k + 1].item():.3g} rounds "
                                    f"to {b32[k].item():g} in float32")
    elif (omab32 <= 0).any():
        k = int(torch.nonzero(omab32 <= 0).flatten()[0])
        out.update(valid=False, why=f"1 - alpha_bar_{k + 1} = "
                                    f"{schedule.one_minus_alpha_bar[k + 1].item():.3g} is 0 in "
                                    "float32 (diffusers divides by it)")
    elif ab32[-1] <= 0:
        out.update(valid=False, why=f"alpha_bar_T = {schedule.alpha_bar[-1].item():.3g} "
                                    "underflows to 0 in float32")
    if not out["valid"]:
        return out
    ab, omab = schedule.alpha_bar[1:], schedule.one_minus_alpha_bar[1:]
    lsnr32 = torch.log(ab32.double()) - torch.log(omab32.double())
    lsnr = torch.log(ab) - torch.log(omab)
    dl = (lsnr32 - lsnr).abs()
    out.update(
        max_rel_err_alpha_bar=float(((ab32.double() - ab) / ab).abs().max()),
        max_rel_err_one_minus_alpha_bar=float(((omab32.double() - omab) / omab).abs().max()),
        max_abs_err_log_snr=float(dl.max()), argmax_t_log_snr=int(dl.argmax()) + 1,
    )
    return out


# ---- export: the UNet --------------------------------------------------------------------
def diffusers_unet_config(cfg: UNetConfig, shape: tuple[int, ...],
                          time_embedding: str) -> dict[str, Any]:
    """UNet2DModel's config.json for ddpmkit's U-Net ``cfg`` on images of ``shape`` (C, H, W)."""
    levels = range(len(cfg.ch_mult))
    _, h, w = shape
    attn = set(cfg.attn_levels)
    head = None if cfg.num_heads == 1 else _attended_widths(cfg)[0] // cfg.num_heads
    out: dict[str, Any] = {
        "_class_name": "UNet2DModel", "_diffusers_version": DIFFUSERS_FORMAT,
        "sample_size": h if h == w else [h, w],
        "in_channels": cfg.in_channels, "out_channels": cfg.out_channels or cfg.in_channels,
        "center_input_sample": False, "time_embedding_type": time_embedding,
        "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": False,
        "down_block_types": ["AttnDownBlock2D" if i in attn else "DownBlock2D" for i in levels],
        "mid_block_type": "UNetMidBlock2D",
        "up_block_types": ["AttnUpBlock2D" if i in attn else "UpBlock2D"
                           for i in reversed(levels)],
        "block_out_channels": [cfg.ch * m for m in cfg.ch_mult],
        "layers_per_block": cfg.num_res_blocks, "mid_block_scale_factor": 1,
        "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv",
        "dropout": cfg.dropout, "act_fn": "silu", "attention_head_dim": head,
        "norm_num_groups": cfg.norm_groups, "attn_norm_num_groups": None, "norm_eps": 1e-5,
        "resnet_time_scale_shift": "default", "add_attention": cfg.mid_attn,
        "class_embed_type": None, "num_class_embeds": None,
        "num_train_timesteps": cfg.T if time_embedding == "learned" else None,
    }
    return out


def _block_pairs(cfg: UNetConfig) -> list[tuple[str, str, str]]:
    """(ddpmkit prefix, diffusers prefix, kind) for every module with weights; kind is
    ``res``, ``attn`` or ``plain`` (same parameter names)."""
    n = len(cfg.ch_mult)
    pairs = [("conv_in", "conv_in", "plain"), ("temb.lin2", "time_embedding.linear_2", "plain")]
    i = 0
    for level in range(n):
        for j in range(cfg.num_res_blocks):
            pairs.append((f"down.{i}.0", f"down_blocks.{level}.resnets.{j}", "res"))
            if level in cfg.attn_levels:
                pairs.append((f"down.{i}.1", f"down_blocks.{level}.attentions.{j}", "attn"))
            i += 1
        if level != n - 1:
            pairs.append((f"down.{i}.conv", f"down_blocks.{level}.downsamplers.0.conv", "plain"))
            i += 1
    pairs += [("mid1", "mid_block.resnets.0", "res"), ("mid2", "mid_block.resnets.1", "res")]
    if cfg.mid_attn:
        pairs.append(("mid_attn", "mid_block.attentions.0", "attn"))
    i = 0
    for b, level in enumerate(reversed(range(n))):
        for j in range(cfg.num_res_blocks + 1):
            pairs.append((f"up.{i}.0", f"up_blocks.{b}.resnets.{j}", "res"))
            if level in cfg.attn_levels:
                pairs.append((f"up.{i}.1", f"up_blocks.{b}.attentions.{j}", "attn"))
            i += 1
        if level != 0:
            pairs.append((f"up.{i}.conv", f"up_blocks.{b}.upsamplers.0.conv", "plain"))
            i += 1
    pairs += [("norm_out", "conv_norm_out", "plain"), ("conv_out", "conv_out", "plain")]
    return pairs


_RES_NAMES = {"norm1": "norm1", "conv1": "conv1", "temb_proj": "time_emb_proj",
              "norm2": "norm2", "conv2": "conv2", "skip": "conv_shortcut"}


def step_rotation(base_dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """R (float64, base_dim x base_dim) with emb(t + 1) = R emb(t) for the sinusoids
    [sin(t w_i), cos(t w_i)] of :func:`ddpmkit.nets.embeddings.sinusoidal_embedding` (T = 1000):
    sin((t+1)w) = cos(w) sin(tw) + sin(w) cos(tw), cos((t+1)w) = cos(w) cos(tw) - sin(w) sin(tw).
    The frequencies are the float32 ones the embedding multiplies t by."""
    half = base_dim // 2
    # the expression of sinusoidal_embedding: float32 frequencies, widened exactly
    w = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    w = w.double()
    c, s = torch.cos(w), torch.sin(w)
    R = torch.eye(base_dim, dtype=torch.float64)
    idx = torch.arange(half)
    R[idx, idx], R[idx, half + idx] = c, s
    R[half + idx, idx], R[half + idx, half + idx] = -s, c
    return R


def diffusers_unet_state_dict(cfg: UNetConfig, sd: dict[str, torch.Tensor],
                              time_embedding: str) -> dict[str, torch.Tensor]:
    """ddpmkit U-Net state_dict -> UNet2DModel's, float32, contiguous. Every tensor of ``sd``
    is used exactly once (a RuntimeError otherwise: the two layouts disagree)."""
    sd = {k: v.detach().to("cpu", torch.float32) for k, v in sd.items()}
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    def take(k: str) -> torch.Tensor:
        used.add(k)
        return sd[k]

    for ours, theirs, kind in _block_pairs(cfg):
        names = [k[len(ours) + 1:] for k in sd if k.startswith(ours + ".")]
        for name in names:
            mod, _, p = name.rpartition(".")
            if kind == "plain":
                out[f"{theirs}.{name}"] = take(f"{ours}.{name}")
            elif kind == "res":
                out[f"{theirs}.{_RES_NAMES[mod]}.{p}"] = take(f"{ours}.{name}")
            elif mod == "qkv":  # rows [q; k; v], heads contiguous inside each: as to_q/k/v
                q, k_, v = take(f"{ours}.{name}").chunk(3, dim=0)
                out |= {f"{theirs}.to_q.{p}": q, f"{theirs}.to_k.{p}": k_,
                        f"{theirs}.to_v.{p}": v}
            else:
                dst = {"norm": "group_norm", "proj": "to_out.0"}[mod]
                out[f"{theirs}.{dst}.{p}"] = take(f"{ours}.{name}")
    w1, b1 = take("temb.lin1.weight"), take("temb.lin1.bias")
    out["time_embedding.linear_1.bias"] = b1
    if time_embedding == "positional":
        # diffusers embeds k = t - 1; W R maps its sinusoids of k onto ours of t = k + 1
        R = step_rotation(cfg.ch, cfg.max_period)
        out["time_embedding.linear_1.weight"] = (w1.double() @ R).float()
    elif time_embedding == "learned":
        out["time_embedding.linear_1.weight"] = w1
        t = torch.arange(1, cfg.T + 1)
        out["time_proj.weight"] = sinusoidal_embedding(t, cfg.ch, cfg.T, cfg.max_period)
    else:
        raise InputError(f"unknown time embedding {time_embedding!r}; choose positional or "
                         "learned")
    left = sorted(set(sd) - used)
    if left:
        raise RuntimeError(f"ddpmkit -> diffusers: unmapped U-Net tensors {left[:5]}")
    return {k: v.contiguous() for k, v in out.items()}


# ---- export: the scheduler and the folder --------------------------------------------------
def diffusers_scheduler_config(schedule: NoiseSchedule, parameterization: str,
                               clip_sample: bool = True) -> dict[str, Any]:
    """DDPMScheduler's scheduler_config.json: the float32 betas as ``trained_betas``, the
    prediction type, ddpmkit's defaults (variance sigma_q^2 = fixed_small, x0_hat clipped to
    [-1, 1] for images, steps that always start at t = T: trailing)."""
    if parameterization not in PREDICTION_TYPES:
        raise InputError(f"the {parameterization!r} output has no diffusers prediction_type")
    betas = [float(b) for b in schedule.beta[1:].to(torch.float32)]
    return {
        "_class_name": "DDPMScheduler", "_diffusers_version": DIFFUSERS_FORMAT,
        "num_train_timesteps": schedule.T, "trained_betas": betas,
        # ignored when trained_betas is given; the end points, for a reader
        "beta_schedule": "linear", "beta_start": betas[0], "beta_end": betas[-1],
        "variance_type": "fixed_small", "clip_sample": bool(clip_sample),
        "clip_sample_range": 1.0, "prediction_type": PREDICTION_TYPES[parameterization],
        "thresholding": False, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0,
        "timestep_spacing": "trailing", "steps_offset": 0, "rescale_betas_zero_snr": False,
    }


def export_diffusers(path: str | os.PathLike, out: str | os.PathLike, *, ema: bool = True,
                     time_embedding: TimeEmbedding = "auto") -> dict[str, Any]:
    """Write the run (or checkpoint) at ``path`` as a diffusers folder ``out`` (module doc).

    ``out`` must not exist yet (or be empty); it is written beside itself and renamed into
    place. Returns what ddpmkit_export.json records."""
    from safetensors.torch import save_file

    from . import __version__
    from .train import load_denoiser

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists; give a new folder (an export never overwrites)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {out}: folder {parent} does not exist; create it first")
    loaded = load_denoiser(path, ema=ema, verbose=False)
    cfg, tc = loaded.run.net_config, loaded.run.config
    shape = tuple(loaded.run.data["shape"])
    chain = _exportable_chain(loaded, path)
    kind = resolve_time_embedding(cfg, time_embedding)
    tensors = diffusers_unet_state_dict(cfg, loaded.denoiser.net.state_dict(), kind)
    info = {
        "format": "ddpmkit-diffusers-export/1", "ddpmkit": __version__,
        "diffusers_format": DIFFUSERS_FORMAT, "run_dir": str(loaded.run_dir),
        "checkpoint": str(loaded.checkpoint), "step": loaded.step, "ema": loaded.ema,
        "model_sha256": loaded.model_sha256, "data": tc.data, "shape": list(shape),
        "parameterization": tc.parameterization,
        "prediction_type": PREDICTION_TYPES[tc.parameterization],
        "schedule": loaded.denoiser.schedule.name, "T": loaded.denoiser.T,
        "time_embedding": kind, "timestep_shift": "diffusers timestep k = ddpmkit t - 1",
        "float32_chain": chain, "parameters": count_parameters(loaded.denoiser.net),
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        (tmp / "unet").mkdir()
        (tmp / "scheduler").mkdir()
        atomic_write_json(tmp / "unet" / "config.json", diffusers_unet_config(cfg, shape, kind))
        save_file(tensors, str(tmp / "unet" / UNET_WEIGHTS), metadata={"format": "pt"})
        atomic_write_json(tmp / "scheduler" / "scheduler_config.json",
                          diffusers_scheduler_config(loaded.denoiser.schedule,
                                                     tc.parameterization))
        atomic_write_json(tmp / "model_index.json", {
            "_class_name": "DDPMPipeline", "_diffusers_version": DIFFUSERS_FORMAT,
            "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]})
        info["unet_sha256"] = sha256_file(tmp / "unet" / UNET_WEIGHTS)
        atomic_write_json(tmp / EXPORT_INFO, info)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info | {"out": str(out)}


def _exportable_chain(loaded, path) -> dict[str, Any]:
    """diffusers' float32 copy of the run's chain (``float32_chain``), or one line saying why
    the run cannot be exported (net, output, data kind or chain)."""
    tc = loaded.run.config
    why = export_refusal(loaded.run.net_config, tc.parameterization,
                         tuple(loaded.run.data["shape"]))
    if why is None and loaded.run.data.get("kind") != "image":
        why = "only image runs map to UNet2DModel"
    chain: dict[str, Any] = {}
    if why is None:
        chain = float32_chain(loaded.denoiser.schedule)
        if not chain["valid"]:
            why = f"diffusers' float32 copy of the schedule is no chain: {chain['why']}"
    if why is not None:
        raise InputError(f"cannot export {path} to diffusers: {why}")
    return chain


# ---- import: a diffusers folder as a ddpmkit Denoiser ---------------------------------------
class DiffusersNet(nn.Module):
    """A diffusers UNet2DModel as ddpmkit's ``net(x_t, t)``: t = 1..T -> its timestep t - 1."""

    def __init__(self, unet: nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t - 1).sample


@dataclass
class DiffusersSource:
    """What ``load_diffusers`` evaluates on: the data spec (``run_dataset`` reads it)."""

    data: str
    image_size: int | None = None
    seed: int = 0
    conditional: bool = False  # a diffusers UNet2DModel here is unconditional


@dataclass
class DiffusersRun:
    """The part of :class:`ddpmkit.train.run.Run` that evaluation reads."""

    config: DiffusersSource
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class DiffusersLoaded:
    """A diffusers folder in the shape of :class:`ddpmkit.train.load.Loaded`: what
    :func:`ddpmkit.evaluate.eval_bpd` and ``eval_samples`` read (denoiser, run.config.data,
    run.data, run_dir, checkpoint, step, ema, model_sha256), plus the scheduler's mapping."""

    denoiser: Denoiser
    run: DiffusersRun
    run_dir: Path
    checkpoint: Path
    step: int
    ema: bool
    model_sha256: str
    mapping: dict[str, Any] = field(default_factory=dict)


#: diffusers prediction_type -> ddpmkit parameterization
PARAMETERIZATION_OF: dict[str, str] = {v: k for k, v in PREDICTION_TYPES.items()}


def _import_diffusers():
    try:
        import diffusers
    except ImportError:
        raise InputError("reading a diffusers folder needs the diffusers package "
                         "(pip install diffusers)") from None
    return diffusers


def load_diffusers(path: str | os.PathLike, *, data: str, device: str = "cpu",
                   image_size: int | None = None, check_data: bool = True) -> DiffusersLoaded:
    """A local diffusers folder (``unet/`` UNet2DModel in safetensors, ``scheduler/`` with
    betas and a prediction_type) as a ddpmkit Denoiser on the float64 chain of its betas.

    ``data``: what it is evaluated on (digits, mnist, a folder or an array file), loaded at
    the UNet's ``sample_size`` (``image_size`` overrides); ``check_data`` loads it once to
    check that its (C, H, W) is the UNet's."""
    diffusers = _import_diffusers()
    path = Path(path)
    unet_dir = path / "unet"
    sched, schedule = _diffusers_chain(diffusers, path)
    pt = sched.config.prediction_type
    # low_cpu_mem_usage=False: the default wants accelerate and warns without it
    unet = diffusers.UNet2DModel.from_pretrained(path, subfolder="unet", local_files_only=True,
                                                 use_safetensors=True, low_cpu_mem_usage=False)
    c = unet.config
    if c.out_channels != c.in_channels:
        raise InputError(f"the UNet outputs {c.out_channels} channels for {c.in_channels} in; "
                         "ddpmkit needs a prediction shaped like x_t")
    size = c.sample_size
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if image_size is None and data != "digits" and hw[0] == hw[1]:
        image_size = None if (data == "mnist" and hw[0] == 28) else hw[0]
    den = Denoiser(DiffusersNet(unet), schedule, PARAMETERIZATION_OF[pt]).to(device).eval()
    info_p = path / EXPORT_INFO
    info = json.loads(info_p.read_text()) if info_p.is_file() else {}
    loaded = DiffusersLoaded(
        denoiser=den,
        run=DiffusersRun(DiffusersSource(data, image_size),
                         {"kind": "image", "shape": [c.in_channels, *hw]}),
        run_dir=path, checkpoint=unet_dir, step=int(info.get("step", 0)),
        ema=bool(info.get("ema", False)), model_sha256=sha256_file(unet_dir / UNET_WEIGHTS),
        mapping={"prediction_type": pt, "parameterization": PARAMETERIZATION_OF[pt],
                 "num_train_timesteps": int(sched.config.num_train_timesteps),
                 "timestep": "diffusers k = ddpmkit t - 1",
                 "betas": "the scheduler's float32 betas -> ddpmkit's float64 chain",
                 "parameters": count_parameters(unet)})
    if check_data:
        from .data import load_dataset

        ds = load_dataset(data, image_size=image_size)
        check_data_shape(loaded, tuple(ds.data_shape))
    return loaded


def _diffusers_chain(diffusers, path: Path):
    """The folder's DDPMScheduler and ddpmkit's float64 chain of its betas, after checking that
    the folder holds a safetensors UNet2DModel and a prediction type ddpmkit maps."""
    unet_dir, sched_dir = path / "unet", path / "scheduler"
    if not (unet_dir / "config.json").is_file() or not sched_dir.is_dir():
        raise InputError(f"{path} is not a diffusers folder with unet/config.json and "
                         "scheduler/ (as save_pretrained writes them)")
    if not (unet_dir / UNET_WEIGHTS).is_file():
        raise InputError(f"{unet_dir} has no {UNET_WEIGHTS}; ddpmkit never loads pickled "
                         "weights (.bin): save the model with safe_serialization=True")
    unet_cfg = json.loads((unet_dir / "config.json").read_text())
    if unet_cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise InputError(f"{unet_dir} holds a {unet_cfg.get('_class_name')}; ddpmkit eval "
                         "reads UNet2DModel (unconditional, pixel space)")
    sched = diffusers.DDPMScheduler.from_pretrained(path, subfolder="scheduler",
                                                    local_files_only=True)
    pt = sched.config.prediction_type
    if pt not in PARAMETERIZATION_OF:
        raise InputError(f"prediction_type {pt!r} has no ddpmkit parameterization; "
                         f"expected one of {', '.join(PARAMETERIZATION_OF)}")
    if str(sched.config.variance_type).startswith("learned"):
        raise InputError(f"variance_type {sched.config.variance_type!r}: a learned variance "
                         "is not evaluated here (ddpmkit's ELBO uses sigma_q^2 or beta_t)")
    try:
        schedule = from_betas(sched.betas.double(), name=f"diffusers/float32-betas "
                                                         f"({sched.config.beta_schedule})")
    except InputError as e:
        raise InputError(f"the scheduler's betas are no ddpmkit chain: {e} (zero terminal "
                         "SNR has no prior term)") from None
    return sched, schedule


def check_data_shape(loaded: DiffusersLoaded, shape: tuple[int, ...]) -> None:
    """InputError unless the data's (C, H, W) is the UNet's."""
    want = tuple(loaded.run.data["shape"])
    if tuple(shape) != want:
        raise InputError(f"the data are {'x'.join(map(str, shape))} but the UNet was built for "
                         f"{'x'.join(map(str, want))} (in_channels x sample_size)")


__all__ = [
    "DiffusersLoaded", "DiffusersNet", "PREDICTION_TYPES", "TIME_EMBEDDINGS",
    "diffusers_scheduler_config", "diffusers_unet_config", "diffusers_unet_state_dict",
    "export_diffusers", "export_refusal", "float32_chain", "load_diffusers", "step_rotation",
]
