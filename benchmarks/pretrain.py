"""Pretraining throughput of the embedded base VLMs against this machine's measured matmul peak.

Prints, for each size, steps/s, tokens/s and achieved GFLOP/s (6 x parameters x tokens)
as a fraction of the fp32 and bf16 matmul peaks measured in the same run, and the time
the default schedule would take. `--full` runs the default schedule of each size instead
of a short one (the 15-minute `small` / 3-minute `tiny` goals).
"""

import argparse
import json
import tempfile
import time

import torch

from textonly.pretrain import DEFAULT_STEPS, PretrainConfig, pretrain


def matmul_peak(dtype, n=1024, seconds=3.0) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,small")
    parser.add_argument("--worlds", default="data/worlds")
    parser.add_argument("--steps", default="20,20,40", help="short schedule when not --full")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    fp32, bf16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"matmul peak on {torch.get_num_threads()} thread(s): fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s")
    for size in args.sizes.split(","):
        steps = None if args.full else tuple(int(x) for x in args.steps.split(","))
        config = PretrainConfig(size=size, worlds=args.worlds, steps=steps, precision=args.precision)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            pretrain(config, out, force=True, progress=False, evaluate=args.full)
            wall = time.perf_counter() - start
            t = json.load(open(f"{out}/pretrain_config.json"))["throughput"]
        default = sum(DEFAULT_STEPS[size])
        print(f"{size:6s} {t['steps_per_s']:6.2f} steps/s  {t['tokens_per_s']:8.0f} tokens/s  "
              f"{t['gflop_per_s']:6.1f} GFLOP/s = {t['gflop_per_s'] / fp32:.0%} of fp32 peak, "
              f"{t['gflop_per_s'] / bf16:.0%} of bf16 peak; wall {wall:.0f} s for {t['steps']} steps; "
              f"default {default} steps ~ {default / t['steps_per_s'] / 60:.1f} min of training")
