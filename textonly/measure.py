"""Measured training cost: seconds per sample, peak memory, energy and MFU, on any device.

:func:`measure_training` runs LoRA training steps (the study's LoRA placement, batch 1 with
gradient accumulation as the paper) on real samples of a dataset in one mode, after a few
untimed warm-up samples, and reports seconds per sample, peak memory, energy (NVML's
counter and codecarbon on a GPU; codecarbon's estimate on a CPU) and the model FLOPs
utilisation: the FLOPs of :func:`textonly.cost.training_flops` per second over
:func:`matmul_peak`, the device's measured matrix-multiply rate in the same dtype.

Batches are collated before the clock starts (image preprocessing is CPU work that a data
loader overlaps with training), so the figure is the training step itself.
"""

from __future__ import annotations

import math
import resource
import time
from pathlib import Path

import torch

from textonly.errors import TextonlyError


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16, *, size: int | None = None,
                seconds: float = 2.0) -> float:
    """The measured FLOP/s of square matrix products of ``size`` (default 8192 on CUDA, 2048 on CPU)."""
    device = torch.device(device)
    n = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(4):
            a @ b
        runs += 4
        _sync(device)
    return 2 * n ** 3 * runs / (time.perf_counter() - start)


def _to(batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    return {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) if torch.is_tensor(v) else v
            for k, v in batch.items()}


def measure_training(model, processor, records: list[dict], root: str | Path, *, mode: str, out: str | Path,
                     describer: str | None = None, samples: int = 32, warmup: int = 2, accumulation: int = 32,
                     learning_rate: float = 3e-5, lora_r: int = 16, lora_alpha: int = 32, peak_flops: float | None = None,
                     progress: bool = True) -> dict:
    """Time ``samples`` LoRA training samples of ``mode`` (``image_text``/``text_only``) on ``model``'s device.

    ``records``: the dataset's questions (cycled when fewer than ``warmup + samples``);
    ``describer``: the description that stands in for the image in ``text_only``.
    ``peak_flops``: the device's peak for MFU (default: :func:`matmul_peak` in the model's dtype).
    Energy and emissions rows go to ``out/emissions.csv``.
    """
    from peft import get_peft_model
    from tqdm.auto import tqdm

    from textonly.cost import COST_MODES, sample_length, sample_tokens, training_flops
    from textonly.energy import track
    from textonly.train import Collator
    from textonly.vlm import lora_config

    if mode not in COST_MODES:
        raise TextonlyError(f"mode {mode!r}: choose from {', '.join(COST_MODES)}")
    if mode == "text_only" and describer is None:
        raise TextonlyError("text_only needs the describer whose descriptions replace the images")
    records = [r for r in records if r.get("image_path") is not None]
    if not records or samples < 1 or warmup < 0:
        raise TextonlyError("need at least one question with an image, samples >= 1 and warmup >= 0")
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    chosen = [records[i % len(records)] for i in range(warmup + samples)]
    rows = sample_tokens(processor, chosen, root, describer=describer, progress=False)
    collator = Collator(processor, Path(root), describer or "")
    condition = "image" if mode == "image_text" else "description"
    batches = [collator([(record, condition)]) for record in chosen]

    model = get_peft_model(model, lora_config(r=lora_r, alpha=lora_alpha))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate)
    if peak_flops is None:
        peak_flops = matmul_peak(device, dtype)

    def step(i: int, batch: dict) -> float:
        loss = model(**_to(batch, device, dtype)).loss / accumulation
        loss.backward()
        if (i + 1) % accumulation == 0:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    for i, batch in enumerate(batches[:warmup]):
        step(i, batch)
    optimizer.zero_grad(set_to_none=True)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    losses = []
    with track(f"measure-{mode}", out) as energy:
        start = time.perf_counter()
        for i, batch in enumerate(tqdm(batches[warmup:], desc=f"{mode} steps", unit="sample", disable=not progress)):
            losses.append(step(i, batch))
        _sync(device)
        seconds = time.perf_counter() - start
    timed = rows[warmup:]
    config = model.get_base_model().config
    flops = sum(training_flops(config, row, mode, lora_r=lora_r)["total"] for row in timed)
    tokens = [sample_length(r, mode) for r in timed]
    if not all(math.isfinite(x) for x in losses):
        raise TextonlyError(f"{mode}: a training loss was not finite")
    result = {
        "mode": mode, "samples": samples, "warmup": warmup, "accumulation": accumulation, "dtype": str(dtype),
        "device": device.type, "seconds": seconds, "seconds_per_sample": seconds / samples,
        "tokens_per_sample": sum(tokens) / samples, "image_tokens_per_sample": sum(r["image_tokens"] for r in timed)
        / samples if mode == "image_text" else 0, "flops_per_sample": flops / samples,
        "achieved_flops_per_s": flops / seconds, "peak_flops_per_s": peak_flops, "mfu": flops / seconds / peak_flops,
        "energy_kwh_codecarbon": energy.get("energy_kwh"), "energy_mode": energy.get("energy_mode"),
        "gpu_energy_kwh_nvml": energy.get("gpu_energy_kwh_nvml"),
        "peak_memory_mb": (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_memory_kind": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process max RSS",
        "trainable_parameters": sum(p.numel() for p in trainable),
    }
    for key in ("energy_kwh_codecarbon", "gpu_energy_kwh_nvml"):
        if result[key] is not None:
            result[key.replace("_kwh", "_j_per_sample")] = result[key] * 3.6e6 / samples
    model.unload()  # the base model back without LoRA, for the next mode
    return result
