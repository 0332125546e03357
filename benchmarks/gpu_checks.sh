#!/usr/bin/env bash
# The GPU checks of the model and bridge issues, as one short script for a lent H100 (run from the
# repository root; results go to $OUT, default ./gpu-out). Each part is time-boxed; PARTS picks them
# (default "bridge-text bridge-tokens"; add "train" for the model issue's tokens/s benchmark):
#   bridge-text    the bridge on a ~100M-parameter kgsim export pretrained on the verbalised default
#                  world (BPE text): pretraining tokens/s, bridge stage times, fine-tuning tokens/s,
#                  the gap table (the bridge issue's GPU check);
#   bridge-tokens  the same on kgsim's token corpus and prompts, with the bridge-vs-simulator agreement;
#   train          bench_train.py on CUDA at ~90M parameters (bf16, torch.compile): tokens/s, MFU,
#                  ratio to HF GPT-2.
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

PARTS=${PARTS:-bridge-text bridge-tokens}
for part in $PARTS; do
  case $part in
    bridge-text|bridge-tokens)
      fmt=text; [ "$part" = bridge-tokens ] && fmt=kgsim-tokens
      echo "== $part: the bridge on a ~100M kgsim export ($fmt) =="
      timeout "${BRIDGE_TIMEOUT:-300}" $PY benchmarks/gpu_bridge.py --format $fmt --out /tmp/$part 2>&1 \
        | grep -v "Loading weights\|Writing model" | tail -40
      cp /tmp/$part/bridge/report.md "$OUT/${part}_report.md" 2>/dev/null
      cp /tmp/$part/gpu_bridge.json "$OUT/${part}.json" 2>/dev/null ;;
    train)
      echo "== train: bench_train on CUDA (~90M) =="
      timeout 150 $PY benchmarks/bench_train.py --device cuda --only 90M --budget 90 \
        --out "$OUT/bench_train_cuda.json" 2>&1 | tail -25 ;;
    *) echo "unknown part $part (choose bridge-text, bridge-tokens, train)" ;;
  esac
done
exit 0
