#!/usr/bin/env bash
# The GPU checks of the model and bridge issues, as one short script for a lent H100 (run from the
# repository root; results go to $OUT, default ./gpu-out). Parts are time-boxed so the whole stays
# under ~5 minutes after the machine's start:
#   1. bench_train.py on CUDA at ~90M parameters (bf16, torch.compile): tokens/s, MFU, ratio to HF GPT-2;
#   2. the bridge on a ~100M-parameter kgsim export: pretrain on a synthetic world on the GPU, export
#      to Hugging Face format, run `kgsim bridge run` on it (kgsim-token rendering of the graph),
#      report tokens/s and the gap table, and the simulator's accuracy on the same facts.
# Packages the machine lacks come from .device/wheels (carried; see README "GPU checks").
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=python3
{
  nvidia-smi -L
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  [ -d .device/wheels ] && $PY -m pip install -q --no-index --find-links .device/wheels tomli_w peft networkx matplotlib tqdm 2>&1 | tail -2
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

echo "== 1. bench_train on CUDA (~90M) =="
timeout 150 $PY benchmarks/bench_train.py --device cuda --only 90M --budget 90 \
  --out "$OUT/bench_train_cuda.json" 2>&1 | tail -25

echo "== 2. bridge on a ~100M kgsim export =="
timeout 190 $PY benchmarks/gpu_bridge.py --out /tmp/gpu_bridge 2>&1 | tail -40
cp /tmp/gpu_bridge/bridge/report.md "$OUT/bridge_report.md" 2>/dev/null
cp /tmp/gpu_bridge/gpu_bridge.json "$OUT/gpu_bridge.json" 2>/dev/null
exit 0
