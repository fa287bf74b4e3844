"""Model cards: a README with the base model's figures and its training curves, beside the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from textonly.fileio import read_jsonl


def _fmt(cell: dict) -> str:
    return f"{cell['accuracy']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}] (n={cell['n']})"


def plot_curves(curves: list[dict], path: Path) -> None:
    """Training loss per step, coloured by phase (language, binding drills, alignment, instruction)."""
    # the object-oriented API: no pyplot state, so a notebook's inline backend stays as it is
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2))
    ax = fig.add_subplot()
    for phase, colour in (("language", "tab:blue"), ("binding", "tab:purple"), ("alignment", "tab:orange"),
                          ("instruction", "tab:green")):
        points = [(c["step"], c["loss"]) for c in curves if c["phase"] == phase]
        if points:
            ax.scatter(*zip(*points), s=3, color=colour, label=phase)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(markerscale=4, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})


def model_card(folder: str | Path, config: dict, report: dict | None, curves: list[dict]) -> str:
    """Write ``curves.png`` into ``folder`` and return the card's Markdown."""
    folder = Path(folder)
    plot_curves(curves, folder / "curves.png")
    c, t, p = config["config"], config["throughput"], config["parameters"]
    lines = [
        f"# Base VLM `{c['size']}` (seed {c['seed']}, image start fraction {c['image_start_fraction']:g})",
        "",
        f"LLaVA architecture: {p['total']:,} parameters (vision tower {p['vision_tower']:,}, projector "
        f"{p['multi_modal_projector']:,}, language model {p['language_model']:,}); {config['image_tokens']} image "
        f"tokens per image. Steps: " + ", ".join(f"{k} {v}" for k, v in config["steps"].items())
        + f" at batch {c['batch_size']}, {c['precision']}.",
        "",
        f"Training took {t['seconds']:.0f} s on {config['torch_threads']} CPU thread(s): {t['steps_per_s']:.2f} steps/s, "
        f"{t['tokens_per_s']:,.0f} tokens/s, {t['gflop_per_s']:.1f} GFLOP/s (6 x parameters x tokens); "
        f"{t['text_tokens']:,} text and {t['image_tokens']:,} image tokens.",
        "",
        "![training curves](curves.png)",
        "",
    ]
    if report:
        lines += ["## What it knows (accuracy with 95% intervals clustered by image; chance is 0.25)", ""]
        for world, parts in report.items():
            lines += [f"### `{world}`", "", "| probe | group | accuracy [95% CI] (n) |", "|---|---|---|"]
            names = {"attributes": "attributes, held-out generic images", "knowledge": "text knowledge, pretraining kinds",
                     "original": "targets before fine-tuning (`original`)",
                     "format": "answer format: \"Which option is X?\" in text"}
            for part, table in parts.items():
                for group, cell in table.items():
                    label = f"Type {group}" if part == "original" and group != "overall" else group
                    lines.append(f"| {names[part]} | {label} | {_fmt(cell)} |")
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
