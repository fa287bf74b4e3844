#!/usr/bin/env bash
# Measured cost of LoRA training steps of the paper's 7B architectures (random bf16 weights) on
# real K-VISCUIT samples, both modes, on an NVIDIA GPU: seconds per sample, peak GPU memory,
# NVML energy and codecarbon, MFU against the GPU's measured bf16 matmul peak.
#
#   benchmarks/cost_gpu.sh prepare        # here (with network to the package registry):
#                                         #   carry/ (16 K-VISCUIT images with descriptions,
#                                         #   the two vocabularies) and .whl/ (missing packages)
#   benchmarks/cost_gpu.sh run OUT_DIR    # on the GPU machine (no network): one JSON per model
#
# With this workplace's device tool: run `prepare`, then
#   run(command="benchmarks/cost_gpu.sh run $OUT", carry=["carry", ".whl"])
# and copy the returned measure_gpu_*.json into book/measured/ (the cost chapter renders them).
# Anywhere else with a GPU and the project installed, `run` works the same without .whl/.
#
# Qwen2-VL runs with max_pixels = 1280 x 28 x 28 (the model card's memory-saving setting): at the
# published bound of 16,384 merged tokens the largest K-VISCUIT photographs make 16K-token
# sequences, whose activations do not fit a single 80 GB GPU without gradient checkpointing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
DESCRIBER=${DESCRIBER:-captioner-base-small-seed0-f1}
SOURCE=${SOURCE:-data/real/k-viscuit-captioner}  # made by `make cost-tokens`
IMAGES=${IMAGES:-16}
SAMPLES=${SAMPLES:-64}
DEVICE=${DEVICE:-cuda}     # DEVICE=cpu LAYERS=1 VISION_LAYERS=1 SAMPLES=2: a quick check of this path on a CPU
LAYERS=${LAYERS:-}
VISION_LAYERS=${VISION_LAYERS:-}

case "${1:-}" in
prepare)
  test -d "$SOURCE" || { echo "no $SOURCE: run make cost-tokens first" >&2; exit 2; }
  rm -rf carry/k-viscuit carry/vocab && mkdir -p carry/vocab
  .venv/bin/python - "$SOURCE" carry/k-viscuit "$IMAGES" <<'EOF'
import sys
from pathlib import Path
from textonly.data.layout import load_dataset, write_dataset
source, out, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
records, images = [], []
for r in load_dataset(source).records:
    if r["image_path"] not in images:
        if len(images) == n:
            continue
        images.append(r["image_path"])
    records.append(r)
write_dataset(out, records, card=f"# The first {n} images of {source.name}\n",
              images={i: (source / "images" / i).read_bytes() for i in images})
print(f"{len(records)} questions on {len(images)} images -> {out}")
EOF
  .venv/bin/python -c "
import importlib.resources as r, shutil
shutil.copy(r.files('mistral_common') / 'data' / 'tokenizer.model.v1', 'carry/vocab/')
shutil.copy(r.files('dashscope') / 'resources' / 'qwen.tiktoken', 'carry/vocab/')"
  # what the GPU image lacks (its package list: /work/.library/device/KINDS.md)
  rm -rf .whl && .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl transformers==5.23.0 codecarbon arrow tzdata pycountry \
    questionary prompt_toolkit wcwidth rapidfuzz pydantic pydantic-core annotated-types typing-inspection
  du -sh carry .whl
  ;;
run)
  OUT=${2:?usage: cost_gpu.sh run OUT_DIR}
  mkdir -p "$OUT"
  if [ -d .whl ] && [ "${WHEELS:-1}" = 1 ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  fi
  [ -d carry/vocab ] && export TEXTONLY_VOCAB_DIR=$PWD/carry/vocab
  export CODECARBON_LOG_LEVEL=error PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt" || true
  for arch in llava-v1.6-mistral-7b llava-v1.6-vicuna-7b qwen2-vl-7b; do
    extra=()
    [ -n "$LAYERS" ] && extra+=(--layers "$LAYERS")
    [ -n "$VISION_LAYERS" ] && extra+=(--vision-layers "$VISION_LAYERS")
    [ "$arch" = qwen2-vl-7b ] && extra+=(--max-pixels $((1280 * 28 * 28)))
    $PY -m textonly cost measure --arch "$arch" --data carry/k-viscuit --description "$DESCRIBER" \
      --device "$DEVICE" --dtype bfloat16 --samples "$SAMPLES" --warmup 2 "${extra[@]}" \
      --out "$OUT/measure_gpu_$arch.json" 2>&1 | grep -v -e "it/s]" -e "sample/s]" | tee "$OUT/log_$arch.txt"
  done
  ;;
*)
  sed -n 2,14p "$0"; exit 2 ;;
esac
