"""Does the embedded text model learn the multiple-choice answer format from drills, and how fast?

Pretrains a base model on answer-format drills only (``--binding-steps``; no language,
image or instruction steps) and prints the accuracy of the format probe ("Which option
is X?" in the study's prompt, X among the options; chance 0.25) with its 95% interval,
and the wall time. The negative result that keeps the drills off by default:

    python benchmarks/binding.py --size small --steps 3000 --batch 8
"""

import argparse
import tempfile
import time

from textonly.evaluate import accuracy_table, score_letters
from textonly.hub import load_model
from textonly.pretrain import PretrainConfig, format_probe, gather_material, pretrain

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--worlds", default="data/worlds")
    args = parser.parse_args()
    config = PretrainConfig(size=args.size, worlds=args.worlds, steps=(0, 0, 0), binding_steps=args.steps,
                            batch_size=args.batch, learning_rate=args.lr)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        pretrain(config, out, progress=True, evaluate=False, force=True)
        seconds = time.perf_counter() - start
        model, processor = load_model(out)
        drills = format_probe(gather_material(config).option_words, seed=1)
        predictions = score_letters(model, processor, drills, args.worlds, condition="no_image", progress=False)
    cell = accuracy_table(drills, predictions, by="category")["overall"]
    print(f"{args.size}: {args.steps} drill steps at batch {args.batch}, lr {args.lr:g}, {seconds:.0f} s -> format "
          f"probe {cell['accuracy']:.3f} [{cell['low']:.3f}, {cell['high']:.3f}] (n={cell['n']}; chance 0.25)")
