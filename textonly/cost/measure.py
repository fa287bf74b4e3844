"""Measured training cost: seconds per sample, peak memory, energy and MFU, on any device.

:func:`measure_training` runs LoRA training steps (the study's LoRA placement, batch 1 with
gradient accumulation as the paper) on real samples of a dataset in one mode, after a few
untimed warm-up samples, and reports seconds per sample, peak memory, energy (NVML's
counter and codecarbon on a GPU; codecarbon's estimate on a CPU) and the model FLOPs
utilisation: the FLOPs of :func:`textonly.core.flops.batch_flops` per second over
:func:`matmul_peak`, the device's matrix-multiply rate measured in the same dtype (both recorded).

Batches are collated before the clock starts (image preprocessing is CPU work that a data
loader overlaps with training), so the figure is the training step itself.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from textonly.core.errors import TextonlyError

#: The torch dtypes (by name) a measurement runs in; the first is the default, the paper's.
DTYPES = ("bfloat16", "float32", "float16")


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


def _batches(processor, records: list[dict], root: str | Path, *, mode: str, description: str | None,
             count: int) -> list[dict]:
    """``count`` batches of one ``mode`` sample each, collated as training collates them (records cycled)."""
    from textonly.pipeline.train import Collator

    records = [r for r in records if r.get("image_path") is not None]
    if not records:
        raise TextonlyError("need at least one question with an image")
    collator = Collator(processor, Path(root), description or "")
    condition = "image" if mode == "image_text" else "description"
    return [collator([(records[i % len(records)], condition)]) for i in range(count)]


def _timed_steps(model, batches: list[dict], *, device: torch.device, dtype: torch.dtype, warmup: int,
                 accumulation: int, learning_rate: float, label: str, out: str | Path,
                 progress: bool) -> tuple[float, dict]:
    """Train on ``batches`` (the first ``warmup`` untimed); the timed part's seconds and energy."""
    from tqdm.auto import tqdm

    from textonly.core.energy import track

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)

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
    with track(label, out) as energy:
        start = time.perf_counter()
        losses = [step(i, batch) for i, batch in enumerate(tqdm(batches[warmup:], desc=f"{label} steps",
                                                                 unit="sample", disable=not progress))]
        _sync(device)
        seconds = time.perf_counter() - start
    if not all(math.isfinite(x) for x in losses):
        raise TextonlyError(f"{label}: a training loss was not finite")
    return seconds, energy


def _peak_memory(device: torch.device, peak: dict) -> dict:
    """The timed steps' own peak (:class:`textonly.core.memory.PeakMemory`), not the process's
    lifetime maximum: measurements of two modes in one process differ as they should."""
    if device.type == "cuda":
        return {"peak_memory_mb": peak["gpu"], "peak_memory_kind": "torch.cuda.max_memory_allocated"}
    return {"peak_memory_mb": peak["process_rss"], "peak_memory_kind": "process RSS, peak during the timed steps"}


def measure_training(model, processor, records: list[dict], root: str | Path, *, mode: str, out: str | Path,
                     description: str | None = None, samples: int = 32, warmup: int = 2, accumulation: int = 32,
                     learning_rate: float = 3e-5, lora_r: int = 16, lora_alpha: int = 32, peak_flops: float | None = None,
                     progress: bool = True) -> dict:
    """Time ``samples`` LoRA training samples of ``mode`` (``image_text``/``text_only``) on ``model``'s device.

    ``records``: the dataset's questions (cycled when fewer than ``warmup + samples``);
    ``description``: the description that stands in for the image in ``text_only``.
    ``peak_flops``: the device's peak for MFU (default: :func:`matmul_peak` in the model's dtype,
    measured here); the result records it beside the achieved FLOP/s, and MFU is their ratio.
    Energy and emissions rows go to ``out/emissions.csv``.
    """
    from peft import get_peft_model

    from textonly.core.flops import COST_MODES, batch_flops
    from textonly.core.memory import PeakMemory
    from textonly.models.lora import lora_config
    from textonly.models.scoring import token_counts

    if mode not in COST_MODES:
        raise TextonlyError(f"mode {mode!r}: choose from {', '.join(COST_MODES)}")
    if mode == "text_only" and description is None:
        raise TextonlyError("text_only needs the description (its name) that replaces the images")
    if samples < 1 or warmup < 0:
        raise TextonlyError(f"samples {samples}, warmup {warmup}: need samples >= 1 and warmup >= 0")
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    batches = _batches(processor, records, root, mode=mode, description=description, count=warmup + samples)
    if peak_flops is None:
        peak_flops = matmul_peak(device, dtype)
    model = get_peft_model(model, lora_config(r=lora_r, alpha=lora_alpha))
    model.train()
    meter = PeakMemory().start()
    seconds, energy = _timed_steps(model, batches, device=device, dtype=dtype, warmup=warmup,
                                      accumulation=accumulation, learning_rate=learning_rate,
                                      label=f"measure-{mode}", out=out, progress=progress)
    peak = meter.stop()
    timed = batches[warmup:]
    flops = sum(batch_flops(model.get_base_model().config, b, lora_r=lora_r) for b in timed)
    counts = [token_counts(processor, b) for b in timed]
    result = {
        "mode": mode, "samples": samples, "warmup": warmup, "accumulation": accumulation, "dtype": str(dtype),
        "device": device.type, "seconds": seconds, "seconds_per_sample": seconds / samples,
        "tokens_per_sample": sum(t + i for t, i in counts) / samples,
        "image_tokens_per_sample": sum(i for _, i in counts) / samples, "flops_per_sample": flops / samples,
        "achieved_flops_per_s": flops / seconds, "peak_flops_per_s": peak_flops, "mfu": flops / seconds / peak_flops,
        "energy_kwh_codecarbon": energy.get("energy_kwh"), "energy_mode": energy.get("energy_mode"),
        "gpu_energy_kwh_nvml": energy.get("gpu_energy_kwh_nvml"), **_peak_memory(device, peak),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    for key in ("energy_kwh_codecarbon", "gpu_energy_kwh_nvml"):
        if result[key] is not None:
            result[key.replace("_kwh", "_j_per_sample")] = result[key] * 3.6e6 / samples
    model.unload()  # the base model back without LoRA, for the next mode
    return result
