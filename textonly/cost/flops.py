"""What a training sample costs: tokens from the real processors, FLOPs from the architecture.

* :func:`sample_tokens` runs a model's processor on a dataset exactly as training does (the
  :class:`textonly.pipeline.train.Collator`), once per training sample and mode: image tokens, text
  tokens, and what the vision tower sees (LLaVA-NeXT tiles, Qwen2-VL patches).
* the FLOPs of a sample come from :func:`textonly.core.flops.training_flops`, the project's one
  FLOP formula (LoRA on the language model, the projector trained in full, the vision tower
  frozen; checked against torch's FLOP counter);
* :func:`run_cost` adds samples up over a training run (epochs x samples); :func:`per_run`
  tabulates it per architecture and dataset at the paper's run sizes.
"""

from __future__ import annotations

from pathlib import Path

from textonly.core.errors import TextonlyError
from textonly.core.prompts import check_descriptions
from textonly.core.flops import COST_MODES, LORA_R, sample_length, training_flops

EPOCHS = 5  # the paper's setting


# --- tokens ----------------------------------------------------------------------------

def sample_tokens(processor, records: list[dict], root: str | Path, *, description: str | None,
                  progress: bool = True) -> list[dict]:
    """Per record: the tokens of its ``image_text`` and ``text_only`` training samples.

    ``description``: which of ``record["descriptions"]`` stands in for the image (None: no
    ``text_only`` sample). Each row holds ``text_tokens``/``image_tokens`` of the
    ``image_text`` sample, ``text_only_tokens``, ``description_tokens`` (the description's
    own tokens), the image's size, and ``vision_tiles`` (LLaVA-NeXT: 336 px tiles the CLIP
    tower encodes) or ``vision_patches`` (Qwen2-VL: 14 px patches before the 2x2 merge).
    """
    from tqdm.auto import tqdm

    from textonly.data.images import load_image
    from textonly.data.layout import IMAGES
    from textonly.models.scoring import token_counts
    from textonly.pipeline.train import Collator

    root = Path(root)
    collator = Collator(processor, root, description or "")
    rows = []
    for record in tqdm(records, desc="tokenizing", unit="sample", disable=not progress):
        if record.get("image_path") is None:
            continue
        batch = collator([(record, "image")])
        text, image = token_counts(processor, batch)
        width, height = load_image(root / IMAGES, record["image_path"]).size
        row = {"id_": record["id_"], "question_type": record.get("question_type"), "image_path": record["image_path"],
               "width": width, "height": height, "text_tokens": text, "image_tokens": image,
               "vision_tiles": 0, "vision_patches": 0}
        if "image_grid_thw" in batch:  # Qwen2-VL: (t, h, w) patches per image
            row["vision_patches"] = int(batch["image_grid_thw"].prod(-1).sum())
        elif "pixel_values" in batch and batch["pixel_values"].dim() == 4:  # LLaVA: one tile per image
            row["vision_tiles"] = 1
        elif "pixel_values" in batch and batch["pixel_values"].dim() == 5:  # LLaVA-NeXT: tiles per image
            from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

            ip = processor.image_processor
            row["vision_tiles"] = int(image_size_to_num_patches(
                batch["image_sizes"][0].tolist(), ip.image_grid_pinpoints, ip.crop_size["height"]))
        if description is not None:
            check_descriptions([record], description, where=f"question {record['id_']!r}")
            only = collator([(record, "description")])
            row["text_only_tokens"] = token_counts(processor, only)[0]
            text = record["descriptions"][description]
            row["description_tokens"] = len(processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        rows.append(row)
    return rows


# --- runs ----------------------------------------------------------------------------

def run_cost(config, rows: list[dict], *, epochs: float = EPOCHS, samples: int | None = None,
             lora_r: int = LORA_R) -> dict:
    """Tokens and FLOPs per mode: the rows' means per sample, and the totals of a run of ``samples``
    samples (default: one per row) for ``epochs``; ``saving``: text_only's FLOPs below image_text's."""
    if not rows:
        raise TextonlyError("no samples to cost")
    n = len(rows) if samples is None else samples
    out = {}
    for mode in COST_MODES:
        flops = [training_flops(config, r, mode, lora_r=lora_r) for r in rows]
        mean = {k: sum(f[k] for f in flops) / len(rows) for k in flops[0]}
        parts = {k: v for k, v in mean.items() if k != "total"}
        out[mode] = {"samples": n, "epochs": epochs,
                     "tokens_per_sample": sum(sample_length(r, mode) for r in rows) / len(rows),
                     "flops_per_sample": mean["total"], "parts_per_sample": parts}
        out[mode].update(tokens=epochs * n * out[mode]["tokens_per_sample"], flops=epochs * n * mean["total"],
                         parts={k: epochs * n * v for k, v in parts.items()})
    out["saving"] = 1 - out["text_only"]["flops"] / out["image_text"]["flops"]
    return out


# --- tables ----------------------------------------------------------------------------

#: Training samples per run in the paper (one per species; one per image), for per-run figures.
PAPER_TRAINING_SAMPLES = {"butterflies": 100, "k-viscuit": 237}
TOKENS_FILE = "cost_tokens.csv"


def token_table(datasets: dict[str, str | Path], architectures: list[str], *, description: str | None,
                progress: bool = True) -> list[dict]:
    """:func:`sample_tokens` for every architecture on every dataset, one row per image.

    Each image's first question stands for its training sample (K-VISCUIT trains on one
    question per image; a butterfly image carries one question). ``datasets`` maps a name
    to a dataset folder whose records carry ``description``'s descriptions.
    """
    from textonly.models import architectures as arch_module
    from textonly.data.layout import load_dataset

    rows = []
    for arch in architectures:
        processor = arch_module.processor(arch)
        for name, root in datasets.items():
            seen, records = set(), []
            for record in load_dataset(root).records:
                if record.get("image_path") is not None and record["image_path"] not in seen:
                    seen.add(record["image_path"])
                    records.append(record)
            for row in sample_tokens(processor, records, root, description=description, progress=progress):
                rows.append({"architecture": arch, "dataset": name, **row})
    return rows


def per_run(rows: list[dict], *, epochs: float = EPOCHS, samples: dict[str, int] | None = None) -> list[dict]:
    """Per architecture and dataset: mean tokens and FLOPs per sample, and per run of the paper's size."""
    from collections import defaultdict

    from textonly.models import architectures as arch_module

    samples = samples or PAPER_TRAINING_SAMPLES
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["architecture"], row["dataset"])].append(row)
    out = []
    for (arch, dataset), group in groups.items():
        config = arch_module.config(arch)
        n = samples.get(dataset, len(group))
        run = run_cost(config, group, epochs=epochs, samples=n)
        entry = {"architecture": arch, "dataset": dataset, "images": len(group), "run_samples": n, "epochs": epochs}
        for mode in COST_MODES:
            entry[f"{mode}_tokens_per_sample"] = run[mode]["tokens_per_sample"]
            entry[f"{mode}_flops_per_sample"] = run[mode]["flops_per_sample"]
            for part, value in run[mode]["parts_per_sample"].items():
                entry[f"{mode}_{part}_flops_per_sample"] = value
            entry[f"{mode}_flops_per_run"] = run[mode]["flops"]
        entry["image_tokens_per_sample"] = sum(r["image_tokens"] for r in group) / len(group)
        entry["description_tokens_per_sample"] = sum(r.get("description_tokens", 0) for r in group) / len(group)
        entry["predicted_saving"] = run["saving"]
        out.append(entry)
    return out


def break_even_description_tokens(config, row: dict) -> int:
    """The description length (tokens) at which a ``text_only`` sample costs as much as ``image_text``.

    ``row``'s ``text_only_tokens`` minus ``description_tokens`` is the rest of the prompt.
    """
    target = training_flops(config, row, "image_text")["total"]
    rest = row["text_only_tokens"] - row.get("description_tokens", 0)
    low, high = 0, 1
    while training_flops(config, dict(row, text_only_tokens=rest + high), "text_only")["total"] < target:
        high *= 2
    while low < high:  # FLOPs grow with length: bisect
        mid = (low + high) // 2
        if training_flops(config, dict(row, text_only_tokens=rest + mid), "text_only")["total"] < target:
            low = mid + 1
        else:
            high = mid
    return low


#: Resolution settings compared in the book: Qwen2-VL's pixel bound (merged tokens x 28 x 28)
#: and LLaVA-NeXT's anyres grids (the published five, or at most two tiles).
QWEN2_VL_MAX_PIXELS = {f"max {n} tokens": n * 28 * 28 for n in (64, 256, 1280, 4096, 16384)}
LLAVA_GRIDS = {"published anyres grids": None, "at most 2 tiles": [[336, 672], [672, 336]]}


def image_tokens_for_sizes(arch: str, sizes: list[tuple[int, int]], *, max_pixels: int | None = None,
                           pinpoints: list[list[int]] | None = None) -> list[dict]:
    """Image tokens and vision-tower work per image size ``(width, height)``, from the processor's own
    arithmetic (no pixels needed); the same counts as running it on the images (a test checks)."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    from textonly.models import architectures as arch_module

    processor = arch_module.processor(arch, max_pixels=max_pixels, pinpoints=pinpoints)
    hw = [(h, w) for w, h in sizes]
    counts = processor._get_num_multimodal_tokens(image_sizes=hw)
    out = []
    for (h, w), tokens, patches in zip(hw, counts.num_image_tokens, counts.num_image_patches):
        if arch_module.get(arch).family == "qwen2_vl":
            out.append({"image_tokens": tokens, "vision_tiles": 0, "vision_patches": patches})
        else:
            ip = processor.image_processor
            tiles = image_size_to_num_patches((h, w), ip.image_grid_pinpoints, ip.crop_size["height"])
            out.append({"image_tokens": tokens, "vision_tiles": tiles, "vision_patches": 0})
    return out


def resolution_sweep(rows: list[dict]) -> list[dict]:
    """Mean tokens and predicted saving per architecture, dataset and resolution setting."""
    from textonly.models import architectures as arch_module

    out = []
    for arch in sorted({r["architecture"] for r in rows}):
        config = arch_module.config(arch)
        settings = ({k: {"max_pixels": v} for k, v in QWEN2_VL_MAX_PIXELS.items()}
                    if arch_module.get(arch).family == "qwen2_vl" else
                    {k: {"pinpoints": v} for k, v in LLAVA_GRIDS.items()})
        for dataset in sorted({r["dataset"] for r in rows}):
            group = [r for r in rows if r["architecture"] == arch and r["dataset"] == dataset]
            sizes = [(r["width"], r["height"]) for r in group]
            for setting, kwargs in settings.items():
                changed = [dict(r, **c) for r, c in zip(group, image_tokens_for_sizes(arch, sizes, **kwargs))]
                out.append({"architecture": arch, "dataset": dataset, "setting": setting,
                            "image_tokens_per_sample": sum(r["image_tokens"] for r in changed) / len(changed),
                            "predicted_saving": run_cost(config, changed)["saving"]})
    return out
