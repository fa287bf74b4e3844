"""The study's workflow on one core and on every core, side by side in one run: a study profile
(default: the main study's `smoke`) run from scratch in two scratch roots that share the worlds
(built first, once, with the worlds step of each), with ``--cores 1`` and then with every core; a second run of each (nothing
to do) is timed too. Prints the wall times and the ratio.

    python benchmarks/study_cores.py [--config studies/main.yaml] [--profile smoke]
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from textonly.study.engine import run_study


def timed(config: str, profile: str, root: Path, cores: int) -> tuple[float, float, int]:
    started = time.perf_counter()
    report = run_study(config, profile, root=root, cores=cores, extra=["--quiet", "all"])
    first = time.perf_counter() - started
    if not report.ok:
        raise SystemExit(f"the study failed with {cores} cores: {report.failed or report.blocked or report.error}")
    again = run_study(config, profile, root=root, cores=cores, extra=["--quiet", "all"])
    return first, again.seconds, len(report.executed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="studies/main.yaml")
    parser.add_argument("--profile", default="smoke")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as scratch:
        worlds = Path(scratch) / "worlds"
        worlds.mkdir()
        roots = {n: Path(scratch) / f"cores{n}" for n in (1, cores)}
        for root in roots.values():  # the worlds step before the clock starts (the worlds built once, shared)
            (root / "data").mkdir(parents=True)
            (root / "data" / "worlds").symlink_to(worlds, target_is_directory=True)
            run_study(args.config, args.profile, root=root, only="worlds", extra=["--quiet", "all"])
        rows = [(n, *timed(args.config, args.profile, root, n)) for n, root in roots.items()]
    print(f"study {args.config} ({args.profile}), from scratch (worlds built once beforehand):")
    for n, first, again, steps in rows:
        print(f"  --cores {n}: {steps} steps in {first:.0f} s; a second run (nothing to do) {again:.1f} s")
    print(f"  every core ({cores}) vs one: {rows[0][1] / rows[1][1]:.2f}x faster")


if __name__ == "__main__":
    main()
