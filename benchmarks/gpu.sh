#!/usr/bin/env bash
# The GPU checks in one script: the test suite's GPU cases, the full shipped runs
# (CNN, ViT, MLP) under the default settings with their times and accuracies, and
# the per-step speed table. On a machine without a CUDA GPU it says so and exits 0.
#
#   benchmarks/gpu.sh [DATA_DIR] [OUT_DIR]
#
# DATA_DIR holds MNIST/raw (default: $NETSPEC_DATA_DIR, else ../shared/data);
# OUT_DIR receives the run folders and gpu-results.md (default: runs/gpu).
# Python must find netspec: installed, or PYTHONPATH=. from the repository root.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DATA=${1:-${NETSPEC_DATA_DIR:-../shared/data}}
OUT=${2:-runs/gpu}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu.sh: skipped: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False)"
  exit 0
fi
mkdir -p "$OUT"
RESULTS="$OUT/gpu-results.md"
{
  echo "# GPU checks ($(date -u +%Y-%m-%d))"
  echo
  echo '```'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  "$PY" -c 'import torch, platform; print("torch", torch.__version__, "cuda", torch.version.cuda, "python", platform.python_version())'
  echo '```'
} | tee "$RESULTS"

status=0
echo "## GPU test cases" | tee -a "$RESULTS"
"$PY" -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$OUT/gpu-tests.log" | tail -n 15
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
tail -n 1 "$OUT/gpu-tests.log" >> "$RESULTS"

echo "## Full runs, default settings" | tee -a "$RESULTS"
echo "| spec | test accuracy | train s | s / epoch | wall s | settings |" >> "$RESULTS"
echo "|---|---|---|---|---|---|" >> "$RESULTS"
# each entry: a shipped spec, optionally with one --set (spec:key=value), e.g. GPU_EXTRA="cnn:train.compile=cudagraphs"
# the whole step as one CUDA graph (train.compile: graph; opt-in, not chosen by auto) beside each default run
for entry in ${GPU_SPECS:-cnn vit mlp} ${GPU_EXTRA-cnn:train.compile=graph vit:train.compile=graph mlp:train.compile=graph}; do
  spec=${entry%%:*}
  extra=()
  [ "$entry" != "$spec" ] && extra=(--set "${entry#*:}")
  dir="$OUT/${entry//[:=.]/_}"
  rm -rf "$dir"
  "$PY" -m netspec run "specs/$spec.yaml" --data-dir "$DATA" --out "$dir" "${extra[@]}" ${GPU_SET:-} 2>&1 | tail -n 4
  "$PY" - "$dir" "$entry" >> "$RESULTS" <<'EOF' || status=1
import json, sys
m = json.load(open(sys.argv[1] + "/metrics.json"))
s = m["speed"]
settings = f"{s['precision']}, {'channels_last' if s['channels_last'] else 'standard'}, compile {s['compile']}" + (", fused attention" if s["fused_attention"] else "")
print(f"| {sys.argv[2]} | {m['test_accuracy']:.4f} | {m['train_seconds']:.1f} | {m['seconds_per_epoch']:.2f} | {m['wall_seconds']:.1f} | {settings} |")
EOF
  tail -n 1 "$RESULTS"
done

# GPU_VARIANTS: variant names separated by commas (as benchmarks/speed.py names them); default all
IFS=, read -r -a GPU_VARIANTS_LIST <<< "${GPU_VARIANTS:-}"
if [ -z "${GPU_SKIP_TABLE:-}" ]; then
  echo "## Per-step time (benchmarks/speed.py --device cuda)" | tee -a "$RESULTS"
  echo '```' >> "$RESULTS"
  # one spec a process: once (H200, 2026-12-04) the CNN's set-up segfaulted in the process that had timed the MLP's graphs
  for spec in ${GPU_TABLE_SPECS:-cnn vit mlp}; do
    COLUMNS=200 "$PY" -X faulthandler benchmarks/speed.py --device cuda --specs "$spec" --steps "${GPU_STEPS:-300}" \
      --rounds "${GPU_ROUNDS:-3}" ${GPU_VARIANTS:+--variants "${GPU_VARIANTS_LIST[@]}"} 2>&1 \
      | grep -v "^W[0-9]" | tee -a "$RESULTS"
  done
  echo '```' >> "$RESULTS"
fi
echo "results: $RESULTS"
exit $status
