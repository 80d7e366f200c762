"""The page's sections, in order: samples, training, weights, ELBO by t, evaluation, config."""

from __future__ import annotations

from ..evaluate import bucket_bpd
from ..figures import elbo_by_t_png, error_by_t_png, training_curves_png, weights_png
from .collect import Collected
from .markup import config_table, e, img, section
from .tables import bpd_table, comparison_table, sample_table

NAV = (("samples", "Samples"), ("training", "Training"), ("weights", "Weights"),
       ("elbo", "ELBO by t"), ("eval", "Evaluation"), ("config", "Config"))


def sections(c: Collected) -> str:
    return "".join(part(c) for part in (_samples, _training, _weights, _elbo, _evaluation,
                                        _config))


def _samples(c: Collected) -> str:
    pics = []
    if c.samples_png:
        pics.append(img(c.samples_png, "samples", e(c.sample_note),
                        pixel=c.run.data["kind"] == "image"))
    if c.trajectory_png:
        pics.append(img(c.trajectory_png, "trajectory",
                        "rows: x_t (the noisy input) and x0_hat(x_t, t) (the denoiser's "
                        "estimate) along one reverse chain"))
    if not pics:
        return section("samples", "Samples", "No checkpoint yet: nothing to draw.", "")
    body = f"<div class='two'>{''.join(pics)}</div>" if len(pics) == 2 else pics[0]
    return section("samples", "Samples and the reverse process",
                   "What the model draws, and how x0_hat sharpens as t falls.", body)


def _training(c: Collected) -> str:
    if not c.records:
        return ""
    body = img(training_curves_png(c.records), "training curves")
    err = error_by_t_png(c.records)
    if err:
        body += "<br>" + img(err, "error by t")
    return section("training", "Training", f"{len(c.records)} log records from "
                   "log.jsonl (means over each logging window).", body)


def _weights(c: Collected) -> str:
    cfg = c.run.config
    gamma = f", γ = {cfg.gamma:g}" if cfg.weighting == "min_snr" else ""
    return section(
        "weights", "The ELBO weight C_t and the weighting used",
        "For t ≥ 2 the ELBO's consistency term is L_t = C_t ‖x̂₀(x_t, t) − x₀‖² with "
        "C_t = c_x0(t)² / (2σ_q²) = (snr<sub>t−1</sub> − snr<sub>t</sub>) / 2. Training "
        f"minimises w(t)‖x̂₀ − x₀‖² with the <span class='pill'>{e(cfg.weighting)}</span> "
        f"weighting{gamma}, t ~ {e(cfg.timesteps)}, parameterization "
        f"<span class='pill'>{e(cfg.parameterization)}</span>.",
        img(weights_png(cfg.noise_schedule(), cfg.weighting, cfg.gamma), "C_t and w(t)"))


def _elbo(c: Collected) -> str:
    exact = next((r for r in reversed(c.evals) if r.get("by_t_bpd")), None)
    if exact is not None:
        buckets = exact.get("consistency_by_bucket") or bucket_bpd(exact["by_t_bpd"])
        return section(
            "elbo", "ELBO terms by t",
            f"From the exact evaluation on the {e(exact['split'])} split (n = {exact['n']}): "
            "prior L_T, every consistency term L_t, decoder L_1.",
            img(elbo_by_t_png(exact, buckets), "ELBO by t"))
    if (c.run_dir / "loss_by_t.png").is_file():
        return section(
            "elbo", "Loss and ELBO terms by t", "From the demo (loss_by_t.png).",
            img((c.run_dir / "loss_by_t.png").read_bytes(), "loss and ELBO by t"))
    return ""


def _evaluation(c: Collected) -> str:
    body = bpd_table(c.evals) + comparison_table(c.evals) + sample_table(c.evals)
    if c.metrics:
        keep = {k: v for k, v in c.metrics.items() if not isinstance(v, (dict, list))}
        body += ("<details><summary>metrics.json (written by ddpmkit demo)</summary>"
                 + config_table(keep) + "</details>")
    if not body:
        body = (f"<p class='note'>No evaluations stored yet. Run <code>ddpmkit eval "
                f"{e(c.run_dir)} --bpd stratified</code>"
                + (" or <code>--fd</code>" if c.run.config.data == "digits" else "")
                + " and rebuild this page with <code>ddpmkit report</code>.</p>")
    return section("eval", "Evaluation", "Every number with the settings it depends on "
                   "(stored in eval/*.json by <code>ddpmkit eval</code>).", body)


def _config(c: Collected) -> str:
    conf = (f"<div class='two'><div><h3>training</h3>{config_table(c.run.config.to_dict())}"
            f"</div><div><h3>network</h3>{config_table(c.run.to_json()['net'])}<h3>data</h3>"
            f"{config_table(c.run.data)}</div></div>")
    return section("config", "Configuration", "config.json of the run.", conf)
