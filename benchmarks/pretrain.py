"""Pretraining time of the embedded base VLMs, stage by stage, against this machine's matmul peak.

Prints, for each size, the vision encoder's own pretraining (render and train seconds) and
each VLM stage (language, alignment, instruction: seconds), the VLM's steps/s, tokens/s and
achieved GFLOP/s as a fraction of the fp32 and bf16 matmul peaks measured in the same run,
and the evaluation's seconds. Goals on 2 cores: `small` with all its stages <= 15 minutes,
`tiny` <= 3. `--full` runs the default schedules (encoder included); without it a short
schedule measures throughput only.

    python benchmarks/pretrain.py --full --sizes tiny,small
"""

import argparse
import json
import tempfile
import time

import torch

from textonly.organism.pretrain import PretrainConfig, pretrain


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
    parser.add_argument("--steps", default="20,20,20", help="short VLM schedule when not --full")
    parser.add_argument("--encoder-steps", type=int, default=40, help="short encoder schedule when not --full")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    fp32, bf16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    print(f"matmul peak on {torch.get_num_threads()} thread(s): fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s")
    for size in args.sizes.split(","):
        steps = None if args.full else tuple(int(x) for x in args.steps.split(","))
        encoder = {} if args.full else {"steps": args.encoder_steps, "images_per_world": 800, "probe_images": 200}
        config = PretrainConfig(size=size, worlds=args.worlds, steps=steps, precision=args.precision,
                                encoder=encoder)
        with tempfile.TemporaryDirectory() as models:
            start = time.perf_counter()
            out = pretrain(config, f"{models}/base", force=True, progress=False, evaluate=args.full)
            wall = time.perf_counter() - start
            info = json.load(open(out / "pretrain_config.json"))
        t, e = info["throughput"], info["encoder"]["seconds"]
        phases = ", ".join(f"{k} {v:.0f} s" for k, v in t["phase_seconds"].items())
        print(f"{size:6s} encoder: render {e['render']:.0f} s, train {e['train']:.0f} s, total {e['total']:.0f} s | "
              f"VLM: {phases}; {t['steps_per_s']:.2f} steps/s, {t['tokens_per_s']:.0f} tokens/s, "
              f"{t['gflop_per_s']:.1f} GFLOP/s = {t['gflop_per_s'] / fp32:.0%} of the fp32 peak, "
              f"{t['gflop_per_s'] / bf16:.0%} of bf16 | evaluation {t['evaluation_seconds']:.0f} s | "
              f"wall {wall / 60:.1f} min")
