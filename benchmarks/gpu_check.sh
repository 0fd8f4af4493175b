#!/usr/bin/env bash
# One prepared check of every CUDA path, to run whenever a GPU is lent (under 8 minutes on one GPU):
#   bash benchmarks/gpu_check.sh            # from the repository root, with .venv installed (make install)
# Prints img/s and peak memory per setting; exits non-zero at the first path that fails. Never run by CI.
set -euo pipefail
PY=${PY:-.venv/bin/python}
T2I=${T2I:-.venv/bin/t2i}
OUT=${OUT:-$(mktemp -d /tmp/t2i-gpu-check.XXXX)}
step() { echo; echo "== $*"; }

"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: this check needs a GPU"
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__} | CUDA {torch.version.cuda} | {p.name} | {p.total_memory / 2**30:.0f} GiB | "
      f"bf16 {torch.cuda.is_bf16_supported()}")
PY

step "precision and memory format: fp32, channels_last, bf16, bf16 + channels_last, + torch.compile (32 px)"
"$PY" benchmarks/precision_speed.py --device cuda --steps 200 --warmup 30 --repeats 2 --compile

step "precision and memory format at 64 px"
"$PY" benchmarks/precision_speed.py --device cuda --resolution 64 --steps 100 --warmup 20 --repeats 1

# each run: summary.md states throughput, precision and peak memory
run() {
  local name=$1; shift
  step "t2i run: $name"
  "$T2I" run --device cuda --quiet --out "$OUT/$name" "$@"
  grep -E "training time|precision|memory" "$OUT/$name/summary.md" || true
}
run fp16-scaler --precision fp16 --steps 300 --set eval.metrics=
run bf16-auto --steps 300 --set eval.metrics=
run compile --precision bf16 --set train.compile=true --steps 300 --set eval.metrics=
run ema-eval --steps 300 --ema 0.999 --set 'eval.metrics=["shapes_accuracy","diversity"]'
run torchrun-1gpu --nproc 1 --steps 200 --set eval.metrics=
run resume --resume "$OUT/bf16-auto" --steps 400

step "one 256 px training step of each recipe in examples/recipes (the papers' widths and batch), fp32 and bf16"
"$PY" benchmarks/recipe_steps.py --device cuda --warmup 2 --steps 5
"$PY" benchmarks/recipe_steps.py --device cuda --warmup 2 --steps 5 --precision bf16

step "metrics on the GPU: FID/KID/IS extractor speed (t2i vs the reference libraries, same weights file)"
if "$PY" benchmarks/metrics_speed.py --help >/dev/null 2>&1; then
  "$PY" benchmarks/metrics_speed.py --device cuda || echo "metrics_speed: needs the Inception weights file (see its --help)"
fi

# FID of 10k and 50k generated images stage by stage (generation / features / statistics), the extraction
# batch chosen for speed, and the bf16 check: FID from bf16-autocast features against fp32 features of the
# same 2,000 images; bf16 is refused when |delta| > 1e-3. INCEPTION_WEIGHTS: torch-fidelity's file (else a
# random one of the same layout: the timings and the delta still mean something, the FID values do not).
step "FID at 10k and 50k generated images, stage by stage; bf16 features vs fp32 (|delta| <= 1e-3 or refused)"
if [ -n "${INCEPTION_WEIGHTS:-}" ]; then weights=(--weights "$INCEPTION_WEIGHTS"); else weights=(--random-weights); fi
"$PY" benchmarks/metrics_speed.py --generated 10000,50000 --device cuda --batch-size 64,128,256,512 \
  --precision fp32,bf16 --check-n 2000 "${weights[@]}"

step "done: every CUDA path ran; runs in $OUT"
