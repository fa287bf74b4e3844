"""Model cards: a README with the base model's figures and its training curves, beside the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from textonly.core.fileio import read_jsonl


def _fmt(cell: dict) -> str:
    return f"{cell['accuracy']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}] (n={cell['n']})"


def plot_curves(curves: list[dict], path: Path) -> None:
    """Training loss per step, coloured by phase (language, alignment, instruction)."""
    # the object-oriented API: no pyplot state, so a notebook's inline backend stays as it is
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    for phase, colour in (("language", "tab:blue"), ("alignment", "tab:orange"), ("instruction", "tab:green")):
        points = [(c["step"], c["loss"]) for c in curves if c["phase"] == phase]
        if points:
            ax.scatter(*zip(*points), s=3, color=colour, label=phase)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(markerscale=4, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})


#: What each probe of a base model's ``report.json`` measures (a scoring suffix may follow).
PROBES = {
    "attributes": "attributes, held-out generic images",
    "knowledge": "text knowledge, pretraining kinds",
    "original": "targets before fine-tuning (`original`)",
    "original_appearance_in_text": "`original`, targets whose appearance the text gave",
    "original_appearance_not_in_text": "`original`, targets whose appearance the text did not give",
}


def probe_label(probe: str) -> str:
    """A probe's description, with its scoring when that is not ``option``."""
    for name, label in sorted(PROBES.items(), key=lambda item: -len(item[0])):
        if probe == name:
            return label
        if probe.startswith(name + "_") and probe[len(name) + 1:] in ("letter", "generate"):
            return f"{label}, {probe[len(name) + 1:]} scoring"
    return probe


def model_card(folder: str | Path, config: dict, report: dict | None, curves: list[dict]) -> str:
    """Write ``curves.png`` into ``folder`` and return the card's Markdown."""
    folder = Path(folder)
    plot_curves(curves, folder / "curves.png")
    c, t, p = config["config"], config["throughput"], config["parameters"]
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in t["phase_seconds"].items())
    lines = [
        f"# Base VLM `{c['size']}` (seed {c['seed']}, image start fraction {c['image_start_fraction']:g})",
        "",
        f"LLaVA architecture: {p['total']:,} parameters (vision tower {p['vision_tower']:,}, frozen, from the "
        f"encoder `{config['encoder']['folder']}`; projector {p['multi_modal_projector']:,}; language model "
        f"{p['language_model']:,}); {config['image_tokens']} image tokens per image. Steps: "
        + ", ".join(f"{k} {v}" for k, v in config["steps"].items())
        + f" at batch {c['batch_size']}, {c['precision']}.",
        "",
        f"Training took {t['seconds']:.0f} s ({phases}) on {config['torch_threads']} CPU thread(s): "
        f"{t['steps_per_s']:.2f} steps/s, {t['tokens_per_s']:,.0f} tokens/s, {t['gflop_per_s']:.1f} GFLOP/s; "
        f"{t['text_tokens']:,} text and {t['image_tokens']:,} image tokens. The encoder took "
        f"{config['encoder']['seconds']['total']:.0f} s when it was built.",
        "",
        "![training curves](curves.png)",
        "",
    ]
    if report:
        lines += ["## What it knows (accuracy with 95% intervals clustered by image; chance is 0.25)", "",
                  "Scored by option likelihood unless the probe names another scoring.", ""]
        for world, parts in report.items():
            lines += [f"### `{world}`", "", "| probe | group | accuracy [95% CI] (n) |", "|---|---|---|"]
            for part, table in parts.items():
                for group, cell in table.items():
                    label = f"Type {group}" if part.startswith("original") and group != "overall" else group
                    lines.append(f"| {probe_label(part)} | {label} | {_fmt(cell)} |")
            lines.append("")
    known = config.get("targets_with_appearance_in_text", [])
    lines += [f"The pretraining text gives the facts of every target and the appearance of {len(known)} of them "
              f"(listed in `pretrain_config.json`); no target image is ever shown.", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path) -> Path:
    """(Re)write ``README.md`` and ``curves.png`` of a finished checkpoint folder."""
    folder = Path(folder)
    config = json.loads((folder / "pretrain_config.json").read_text())
    report_file = folder / "report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else None
    curves = read_jsonl(folder / "curves.jsonl")
    (folder / "README.md").write_text(model_card(folder, config, report, curves), encoding="utf-8")
    return folder / "README.md"


def plot_encoder_curves(curves: list[dict], path: Path) -> None:
    """The encoder's contrastive loss per step, one colour per world (a running mean over 50 steps)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    for world, colour in (("wings", "tab:orange"), ("heritage", "tab:blue")):
        points = [(c["step"], c["loss"]) for c in curves if c["world"] == world]
        if points:
            steps, losses = map(np.asarray, zip(*points))
            k = min(50, len(losses))
            ax.plot(steps[k - 1:], np.convolve(losses, np.ones(k) / k, mode="valid"), color=colour, label=world)
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss (running mean)")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})


def encoder_card(folder: str | Path, config: dict, report: dict, curves: list[dict]) -> str:
    """Write ``curves.png`` into ``folder`` and return the encoder card's Markdown."""
    folder = Path(folder)
    plot_encoder_curves(curves, folder / "curves.png")
    c, p, s = config["config"], config["parameters"], config["seconds"]
    lines = [
        f"# Vision encoder `{c['size']}` (CLIP, worlds seed {config['world_seed']})",
        "",
        f"A `CLIPModel` of {p['total']:,} parameters (vision {p['vision']:,}, text {p['text']:,}), "
        f"{c['image_size']} px images in {c['patch_size']} px patches, pretrained contrastively on "
        + ", ".join(f"{n:,} rendered `{w}` images" for w, n in config["images"].items())
        + f" of generic individuals (in look-alike families of {c['family_size']}) and pretraining kinds, "
        f"never a target; {config['steps']} steps of {c['batch_size']} images, with an auxiliary attribute loss "
        f"of weight {c['attribute_loss_weight']:g} on the patch features the VLM reads. "
        f"Rendering took {s['render']:.0f} s and training {s['train']:.0f} s on {config['torch_threads']} "
        "CPU thread(s).",
        "",
        "![training curves](curves.png)",
        "",
        "## What it sees (accuracy per attribute on held-out generic images, 95% intervals)",
        "",
        "Zero-shot: the one-attribute caption closest to the image. Linear probes: logistic "
        "regressions, fitted on other rendered images, on the pooled image features and on the mean "
        "patch features that the VLM reads.",
        "",
    ]
    for world, parts in report.items():
        lines += [f"### `{world}`", "", "| attribute | zero-shot | linear probe (pooled) | linear probe (patches) |",
                  "|---|---|---|---|"]
        for attr in parts["zero_shot"]:
            lines.append(f"| {attr} | {_fmt(parts['zero_shot'][attr])} | {_fmt(parts['linear_probe'][attr])} | "
                         f"{_fmt(parts['patch_probe'][attr])} |")
        lines.append("")
    return "\n".join(lines)


def write_encoder_card(folder: str | Path) -> Path:
    """(Re)write ``README.md`` and ``curves.png`` of a finished encoder folder."""
    folder = Path(folder)
    config = json.loads((folder / "encoder_config.json").read_text())
    report = json.loads((folder / "report.json").read_text())
    (folder / "README.md").write_text(encoder_card(folder, config, report, read_jsonl(folder / "curves.jsonl")),
                                      encoding="utf-8")
    return folder / "README.md"
