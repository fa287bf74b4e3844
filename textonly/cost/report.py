"""Tables and plots of the cost chapter, from the measured files in ``book/measured/``.

``cost_tokens.csv`` (``python -m textonly cost tokens``: the paper architectures' processors on
the real images) and ``measure_*.json`` (``python -m textonly cost measure``: timed training
steps) are small committed result files with their provenance; everything else here is
arithmetic on them through :mod:`textonly.cost.flops`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from textonly.cost import flops
from textonly.core.config import PROJECT_ROOT
from textonly.core.errors import TextonlyError

MEASURED = PROJECT_ROOT / "book" / "measured"
DESCRIPTION_LENGTHS = list(range(0, 1601, 25))


def load_tokens(folder: str | Path = MEASURED) -> tuple[list[dict], dict]:
    """The token rows and their provenance (``cost_tokens.csv`` and ``.json``)."""
    path = Path(folder) / flops.TOKENS_FILE
    if not path.is_file():
        raise TextonlyError(f"{path}: no token table; make it with `make cost-tokens` (needs ../shared/datasets)")
    rows = pd.read_csv(path).to_dict("records")
    return rows, json.loads(path.with_suffix(".json").read_text())


def load_measurements(folder: str | Path = MEASURED) -> list[dict]:
    """Every ``measure_*.json`` in ``folder``, file name kept as ``file``."""
    return [dict(json.loads(p.read_text()), file=p.name) for p in sorted(Path(folder).glob("measure_*.json"))]


def tokens_table(rows: list[dict]) -> pd.DataFrame:
    """Per architecture and dataset: images and mean tokens of a training sample in each mode."""
    frame = pd.DataFrame(rows)
    frame["image_text_tokens"] = frame["text_tokens"] + frame["image_tokens"]
    grouped = frame.groupby(["architecture", "dataset"])
    out = grouped.agg(images=("image_tokens", "size"), image_tokens_mean=("image_tokens", "mean"),
                      image_tokens_median=("image_tokens", "median"), image_tokens_max=("image_tokens", "max"),
                      question_tokens=("text_tokens", "mean"), description_tokens=("description_tokens", "mean"),
                      image_text_tokens=("image_text_tokens", "mean"), text_only_tokens=("text_only_tokens", "mean"))
    return out.reset_index()


def flops_table(rows: list[dict]) -> pd.DataFrame:
    """Per architecture and dataset: TFLOPs per sample and PFLOPs per run of the paper's size, by mode,
    the vision tower's share of ``image_text``, and the predicted saving of ``text_only``."""
    frame = pd.DataFrame(flops.per_run(rows))
    out = pd.DataFrame({
        "architecture": frame["architecture"], "dataset": frame["dataset"], "run samples": frame["run_samples"],
        "image_text TFLOP/sample": frame["image_text_flops_per_sample"] / 1e12,
        "text_only TFLOP/sample": frame["text_only_flops_per_sample"] / 1e12,
        "image_text PFLOP/run": frame["image_text_flops_per_run"] / 1e15,
        "text_only PFLOP/run": frame["text_only_flops_per_run"] / 1e15,
        "vision tower share %": 100 * frame["image_text_vision_tower_flops_per_sample"]
        / frame["image_text_flops_per_sample"],
        "predicted saving %": 100 * frame["predicted_saving"]})
    return out.sort_values(["dataset", "architecture"]).reset_index(drop=True)


def short_name(arch: str) -> str:
    """``llava-v1.6-mistral-7b`` -> ``mistral``, ``qwen2-vl-7b`` -> ``qwen2-vl``: for crowded axes."""
    return arch.replace("llava-v1.6-", "").replace("-7b", "")


def parts_frame(rows: list[dict]) -> pd.DataFrame:
    """Mean FLOPs per sample by part (vision tower, projector, language forward/backward), long format."""
    long = []
    for entry in flops.per_run(rows):
        for mode in flops.COST_MODES:
            for part in ("vision_tower", "projector", "language_forward", "language_backward"):
                long.append({"architecture": entry["architecture"], "dataset": entry["dataset"], "mode": mode,
                             "part": part, "TFLOP": entry[f"{mode}_{part}_flops_per_sample"] / 1e12})
    return pd.DataFrame(long)


def plot_parts(rows: list[dict]):
    """Stacked bars: TFLOPs of one training sample by part, per architecture, dataset and mode."""
    import matplotlib.pyplot as plt

    parts = parts_frame(rows)
    datasets = sorted(parts["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    colours = {"vision_tower": "#4c72b0", "projector": "#8172b2", "language_forward": "#55a868",
               "language_backward": "#c44e52"}
    for ax, dataset in zip(axes[0], datasets):
        table = parts[parts["dataset"] == dataset].pivot_table(index=["architecture", "mode"], columns="part",
                                                               values="TFLOP")[list(colours)]
        labels = [f"{short_name(a)}\n{m}" for a, m in table.index]
        bottom = pd.Series(0.0, index=table.index)
        for part, colour in colours.items():
            ax.bar(labels, table[part], bottom=bottom, color=colour, label=part.replace("_", " "))
            bottom += table[part]
        ax.set_title(dataset)
        ax.set_ylabel("TFLOP per training sample")
        ax.tick_params(axis="x", labelsize=8)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def saving_curve(rows: list[dict], lengths: list[int] = DESCRIPTION_LENGTHS) -> pd.DataFrame:
    """Predicted saving (%) of ``text_only`` against description length (tokens), per architecture and dataset."""
    from textonly.models import architectures

    out = []
    for (arch, dataset), group in pd.DataFrame(rows).groupby(["architecture", "dataset"]):
        config = architectures.config(arch)
        records = group.to_dict("records")
        image_text = sum(flops.training_flops(config, r, "image_text")["total"] for r in records)
        for n in lengths:
            text_only = sum(flops.training_flops(config, dict(r, text_only_tokens=r["text_only_tokens"]
                                                               - r["description_tokens"] + n), "text_only")["total"]
                            for r in records)
            out.append({"architecture": arch, "dataset": dataset, "description tokens": n,
                        "predicted saving %": 100 * (1 - text_only / image_text)})
    return pd.DataFrame(out)


def break_even_table(rows: list[dict]) -> pd.DataFrame:
    """Per architecture and dataset: the description length at which text-only costs as much, per image
    (median and quartiles), beside the measured describer's mean length."""
    from textonly.models import architectures

    out = []
    for (arch, dataset), group in pd.DataFrame(rows).groupby(["architecture", "dataset"]):
        config = architectures.config(arch)
        even = pd.Series([flops.break_even_description_tokens(config, r) for r in group.to_dict("records")])
        out.append({"architecture": arch, "dataset": dataset, "break-even median": even.median(),
                    "break-even 25%": even.quantile(0.25), "break-even 75%": even.quantile(0.75),
                    "measured description tokens": group["description_tokens"].mean()})
    return pd.DataFrame(out)


def plot_saving_curve(rows: list[dict], claim: float | None = None):
    """Predicted saving against description length, one line per architecture, a panel per dataset;
    ``claim`` (:func:`cost_claim`) drawn across."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    curve = saving_curve(rows)
    measured = pd.DataFrame(rows).groupby("dataset")["description_tokens"].mean()
    grid = sns.relplot(data=curve, x="description tokens", y="predicted saving %", hue="architecture",
                       col="dataset", kind="line", height=3.6, aspect=1.3)
    for dataset, ax in grid.axes_dict.items():
        ax.set_ylim(-150, 100)  # far below 0 text-only costs more; the table gives the break-even length
        ax.axhline(0, color="black", lw=0.8)
        ax.axvline(measured[dataset], color="grey", ls=":", lw=1)
        ax.text(measured[dataset], -150, " captioner", fontsize=7, va="bottom", color="grey")
        if claim is not None and claim == claim:  # NaN: the paper states no saving
            ax.axhline(claim, color="#c44e52", ls="--", lw=1)
            ax.text(ax.get_xlim()[1], claim, f"claim {claim:g}% ", fontsize=7, ha="right", va="bottom",
                    color="#c44e52")
    plt.close(grid.figure)
    return grid.figure


def plot_image_tokens(rows: list[dict]):
    """The distribution of image tokens per image (log scale), per architecture and dataset."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = pd.DataFrame(rows)
    grid = sns.displot(data=frame, x="image_tokens", hue="architecture", col="dataset", kind="ecdf", log_scale=True,
                       height=3.4, aspect=1.3)
    grid.set_axis_labels("image tokens per image (log)", "share of images")
    plt.close(grid.figure)
    return grid.figure


def sweep_table(rows: list[dict]) -> pd.DataFrame:
    """Mean image tokens and predicted saving (%) under other resolution settings."""
    frame = pd.DataFrame(flops.resolution_sweep(rows))
    frame["predicted saving %"] = 100 * frame.pop("predicted_saving")
    return frame.rename(columns={"image_tokens_per_sample": "image tokens"})


def measured_table(measurements: list[dict]) -> pd.DataFrame:
    """Timed training steps: per file and mode, seconds, FLOPs, MFU, memory and energy per sample."""
    out = []
    for m in measurements:
        by_mode = {r["mode"]: r for r in m["results"]}
        for mode, r in by_mode.items():
            energy = r.get("gpu_energy_j_per_sample_nvml") or r.get("energy_j_per_sample_codecarbon")
            out.append({**_identity(m), "dtype": r["dtype"], "mode": mode, "s/sample": r["seconds_per_sample"], "tokens/sample": r["tokens_per_sample"],
                        "TFLOP/sample": r["flops_per_sample"] / 1e12, "MFU %": 100 * r["mfu"],
                        "peak memory MB": r["peak_memory_mb"], "J/sample": energy,
                        "energy source": "NVML" if r.get("gpu_energy_j_per_sample_nvml") else r["energy_mode"]})
    return pd.DataFrame(out)


def _identity(m: dict) -> dict:
    model = m.get("architecture") or Path(m.get("model") or "?").name
    if m.get("layers"):
        model += f" ({m['layers']} LM layers)"
    device = m["provenance"]["device"]
    return {"model": model, "data": "/".join(Path(m["data"]).parts[-2:]),
            "device": device.get("gpu") or device.get("cpu")}


def measured_ratios(measurements: list[dict]) -> pd.DataFrame:
    """``text_only`` / ``image_text`` per measurement: measured seconds and energy beside predicted FLOPs."""
    out = []
    for m in measurements:
        by_mode = {r["mode"]: r for r in m["results"]}
        if not {"image_text", "text_only"} <= set(by_mode):
            continue
        it, to = by_mode["image_text"], by_mode["text_only"]
        key = "gpu_energy_j_per_sample_nvml" if it.get("gpu_energy_j_per_sample_nvml") else \
            "energy_j_per_sample_codecarbon"
        energy = to[key] / it[key] if it.get(key) and to.get(key) else float("nan")
        out.append({**_identity(m), "time ratio (measured)": to["seconds_per_sample"] / it["seconds_per_sample"],
                    "FLOP ratio (predicted)": to["flops_per_sample"] / it["flops_per_sample"],
                    "energy ratio": energy, "energy source": "NVML" if key.startswith("gpu") else it["energy_mode"]})
    return pd.DataFrame(out)


# --- the chapter's prose -----------------------------------------------------------------

def cost_claim(paper: dict) -> float:
    """The paper's claimed energy saving of text-only training (%), from its reported figures and
    claims (:func:`textonly.report.findings.paper`); NaN when it states none."""
    for claim in paper.get("claims") or []:
        if claim.get("unit") == "%" and "energy" in claim.get("claim", ""):
            return float(claim["value"])
    return float("nan")


def chapter_tables(rows: list[dict]) -> dict[str, pd.DataFrame]:
    """The tables of the token rows that the chapter shows and quotes: ``tokens``, ``flops``, ``break_even``."""
    return {"tokens": tokens_table(rows), "flops": flops_table(rows), "break_even": break_even_table(rows)}


def glue_key(architecture: str, dataset: str) -> str:
    """``llava-v1.6-mistral-7b``, ``k-viscuit`` -> ``llava_v1_6_mistral_7b_k_viscuit``: a name for glue."""
    return f"{architecture}_{dataset}".replace("-", "_").replace(".", "_")


def _sizes(frame: pd.DataFrame) -> str:
    sizes = frame.assign(area=frame["width"] * frame["height"]).sort_values("area")
    low, high = sizes.iloc[0], sizes.iloc[-1]
    if (low["width"], low["height"]) == (high["width"], high["height"]):
        return f"all {low['width']} x {low['height']}"
    return f"from {low['width']} x {low['height']} to {high['width']} x {high['height']}"


def figures(tables: dict[str, pd.DataFrame], rows: list[dict], measurements: list[dict], paper: dict) -> dict:
    """Every number (and the label of an extreme) the chapter's prose quotes, by glue name."""
    out: dict = {"paper_energy_claim": cost_claim(paper)}
    frame = pd.DataFrame(rows)
    for dataset, group in frame.groupby("dataset"):
        images = group.drop_duplicates("image_path")
        out[f"images_{dataset.replace('-', '_')}"] = float(len(images))
        out[f"sizes_{dataset.replace('-', '_')}"] = _sizes(images)
    for (arch, dataset), group in frame.groupby(["architecture", "dataset"]):
        out[f"vision_tiles_mean_{glue_key(arch, dataset)}"] = float(group["vision_tiles"].mean())
        out[f"vision_patches_max_{glue_key(arch, dataset)}"] = float(group["vision_patches"].max())
    columns = {"tokens": {"image_tokens_mean": "image_tokens_mean", "image_tokens_max": "image_tokens_max"},
               "flops": {"saving": "predicted saving %", "vision_share": "vision tower share %"},
               "break_even": {"break_even": "break-even median"}}
    for table, names in columns.items():
        for _, r in tables[table].iterrows():
            for name, column in names.items():
                out[f"{name}_{glue_key(r['architecture'], r['dataset'])}"] = float(r[column])
    saving = tables["flops"].set_index(["architecture", "dataset"])["predicted saving %"]
    for end, (arch, dataset) in (("min", saving.idxmin()), ("max", saving.idxmax())):
        out[f"saving_{end}"] = float(saving[(arch, dataset)])
        out[f"saving_{end}_label"] = f"{arch} on {dataset}"
    out["description_tokens_low"] = float(tables["tokens"]["description_tokens"].min())
    out["description_tokens_high"] = float(tables["tokens"]["description_tokens"].max())
    out.update(_embedded_figures(measurements))
    return out


def _embedded_figures(measurements: list[dict]) -> dict:
    """Tokens and time against FLOPs of the embedded models measured on a CPU (NaN without any)."""
    embedded = [m for m in measurements if m.get("model") and not m["provenance"]["device"].get("gpu")]
    ratios = measured_ratios(embedded)
    results = [r for m in embedded for r in m["results"]]

    def mean(mode: str, key: str) -> float:
        return float(pd.Series([r[key] for r in results if r["mode"] == mode], dtype=float).mean())

    return {"cpu_time_ratio": float(ratios["time ratio (measured)"].mean()) if len(ratios) else float("nan"),
            "cpu_flop_ratio": float(ratios["FLOP ratio (predicted)"].mean()) if len(ratios) else float("nan"),
            "embedded_image_text_tokens": mean("image_text", "tokens_per_sample"),
            "embedded_image_tokens": mean("image_text", "image_tokens_per_sample"),
            "embedded_text_only_tokens": mean("text_only", "tokens_per_sample")}
