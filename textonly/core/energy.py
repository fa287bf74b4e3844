"""Energy of a phase of work: codecarbon (one tracker per phase) and, on NVIDIA GPUs, NVML's counter.

On a CPU without power counters (this project's machines) codecarbon *estimates* energy
from the processor's TDP and the RAM size; the result says so in ``energy_mode`` and is
always recorded beside wall time, so a reader never mistakes it for a measurement.
"""

from __future__ import annotations

import csv
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

EMISSIONS_FILE = "emissions.csv"
RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")


def _nvml_energy_mj() -> float | None:
    """Total energy of GPU 0 since the driver loaded, in millijoules (None without NVML)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(pynvml.nvmlDeviceGetHandleByIndex(0)))
    except Exception:  # no NVIDIA driver, no pynvml, or a GPU without the counter
        return None


def energy_mode() -> str:
    """How codecarbon gets the CPU's power here: measured (RAPL readable) or an estimate."""
    try:
        RAPL.read_text()
        return "measured (RAPL)"
    except OSError:
        return "estimate (codecarbon: TDP and RAM constants; no power counters)"


@contextmanager
def track(phase: str, out_dir: str | Path, *, country_iso_code: str | None = None) -> Iterator[dict]:
    """Track one phase; on exit the yielded dict holds seconds, energy (kWh) and how it was obtained.

    codecarbon appends a row to ``out_dir/emissions.csv`` (project name = ``phase``). The
    country sets the carbon intensity only (``CODECARBON_COUNTRY``, default USA).
    """
    os.environ.setdefault("CODECARBON_LOG_LEVEL", "error")
    from codecarbon import OfflineEmissionsTracker

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tracker = OfflineEmissionsTracker(
        project_name=phase, output_dir=str(out_dir), output_file=EMISSIONS_FILE, save_to_file=True,
        country_iso_code=country_iso_code or os.environ.get("CODECARBON_COUNTRY", "USA"),
        log_level=os.environ["CODECARBON_LOG_LEVEL"], tracking_mode="process", measure_power_secs=5,
        allow_multiple_runs=True)
    result: dict = {"phase": phase}
    nvml_start = _nvml_energy_mj()
    start = time.perf_counter()
    tracker.start()
    try:
        yield result
    finally:
        tracker.stop()
        result["seconds"] = round(time.perf_counter() - start, 3)
        row = _last_row(out_dir / EMISSIONS_FILE, phase)
        result["energy_kwh"] = float(row["energy_consumed"]) if row else None
        result["emissions_kg"] = float(row["emissions"]) if row else None
        result["energy_mode"] = energy_mode() if not row or not float(row.get("gpu_count") or 0) else \
            "codecarbon with NVML (GPU measured)"
        nvml_end = _nvml_energy_mj()
        if nvml_start is not None and nvml_end is not None:
            result["gpu_energy_kwh_nvml"] = (nvml_end - nvml_start) / 3.6e9


def _last_row(path: Path, phase: str) -> dict | None:
    try:
        with open(path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r["project_name"] == phase]
    except OSError:
        return None
    return rows[-1] if rows else None
