#!/usr/bin/env bash
# A LoRA step against a full step in ift (`ift bench train [--lora-r R]`, cpu backend), and the same
# LoRA step in PEFT + PyTorch (tools/bench/bench_peft.py), in one invocation, same shapes, fp32, same
# thread count; prints tokens/s, peak RSS and the ratios. The runs alternate (full, LoRA, PEFT) twice
# so a shared machine's noise shows as the spread between the two rounds.
#
#   tools/bench/compare_peft.sh [IFT_BINARY] [MODEL B T STEPS THREADS R]
#   default: build/tools/ift gpt2-small-6l 4 256 5 $(nproc) 16
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ift=${1:-build/tools/ift}
model=${2:-gpt2-small-6l} B=${3:-4} T=${4:-256} steps=${5:-5} threads=${6:-$(nproc)} r=${7:-16}
py=${PYTHON:-/tmp/goldvenv/bin/python}  # transformers + peft
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
runs=()
for round in 1 2; do
  full=$("$ift" bench train --model "$model" --batch "$B" --seq-len "$T" --steps "$steps" --threads "$threads" --json)
  lora=$("$ift" bench train --model "$model" --batch "$B" --seq-len "$T" --steps "$steps" --threads "$threads" \
         --lora-r "$r" --json)
  peft=$(OMP_NUM_THREADS=$threads "$py" "$here/bench_peft.py" --model "$model" --batch "$B" --seq-len "$T" \
         --steps "$steps" --threads "$threads" --lora-r "$r" 2>/dev/null | tail -1)
  runs+=("$full" "$lora" "$peft")
done
python3 - "${runs[@]}" <<'PY'
import json, sys
r = [json.loads(x) for x in sys.argv[1:]]
for i in range(0, len(r), 3):
    full, lora, peft = r[i:i + 3]
    print(f"round {i // 3 + 1}: {full['model']} B={full['batch']} T={full['seq_len']} r={lora['lora_r']}")
    for name, x in (("ift full", full), ("ift LoRA", lora), ("PEFT LoRA", peft)):
        print(f"  {name:10} {x['tokens_per_s']:8.0f} tokens/s  {x['median_ms']:8.1f} ms/step  peak RSS {x['peak_rss_mb']:.0f} MiB")
    print(f"  ift LoRA / ift full: {lora['tokens_per_s'] / full['tokens_per_s']:.2f}x tokens/s, "
          f"{lora['peak_rss_mb'] / full['peak_rss_mb']:.2f}x peak RSS; ift LoRA / PEFT: "
          f"{lora['tokens_per_s'] / peft['tokens_per_s']:.2f}x tokens/s, {lora['peak_rss_mb'] / peft['peak_rss_mb']:.2f}x peak RSS")
PY
