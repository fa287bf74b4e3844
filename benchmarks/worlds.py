"""Time a full build of both synthetic worlds (goal: at most 60 s on 2 cores at 64 px)."""

import os
import tempfile
import time

from textonly.organism.worlds.build import build_world

if __name__ == "__main__":
    workers = os.cpu_count()
    with tempfile.TemporaryDirectory() as out:
        total, images = 0.0, 0
        for name in ("wings", "heritage"):
            start = time.perf_counter()
            path = build_world(name, out, seed=0, image_size=64, workers=workers, force=True, progress=False)
            seconds = time.perf_counter() - start
            n = sum(1 for _ in path.glob("*/images/*.png"))
            total, images = total + seconds, images + n
            print(f"{name:9s} {seconds:6.1f} s  {n:5d} images  {n / seconds:6.0f} images/s")
        print(f"both      {total:6.1f} s  {images:5d} images  ({workers} worker(s); goal <= 60 s)")
