#!/usr/bin/env bash
# The LoRA demo: adapters on the README demo's trained model (tools/demo.sh, runs/demo) teach it a
# task its training left out, `max` (the largest of a few digits; `ift synth --tasks max`), with
# configs/demo-lora.yaml. Scores by exact match on instruction phrasings held out of training: the
# new task before and after, and the demo's six tasks after (is anything forgotten?). Under a
# minute on two cores (docs/benchmarks.md has what it took and scored).
#
#   bash tools/demo.sh && bash tools/demo_lora.sh [--set FIELD=VALUE ...]   (passed to ift train)
#   (IFT_DEMO_DIR=DIR: the base demo's run, default runs/demo; IFT_LORA_DIR=DIR: this run, default
#   runs/demo-lora; IFT_BIN=PATH: an ift binary to use instead of building build-demo/tools/ift)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${IFT_DEMO_DIR:-runs/demo}
run=${IFT_LORA_DIR:-runs/demo-lora}
step() { printf '\n== %s\n' "$*"; }

if [ ! -d "$base/checkpoints" ] || [ ! -f "$base/data/train.jsonl" ]; then
  echo "no trained demo in $base: run 'bash tools/demo.sh' first (or set IFT_DEMO_DIR)" >&2
  exit 1
fi
ift=${IFT_BIN:-build-demo/tools/ift}
if [ ! -x "$ift" ]; then
  step "build (the cpu path only)"
  cmake -S . -B build-demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DIFT_CUDA=OFF -DIFT_BUILD_TESTS=OFF >/dev/null
  cmake --build build-demo --target ift
fi

step "the new task, max: its examples (seed 1), 4 of its 16 phrasings held out for the score"
"$ift" synth --out "$run/data" --tasks max --train 3000 --eval 100 --seed 1

eval_args=(--template configs/demo-template.yaml --examples 1)
step "the base model on the new task (it never saw it)"
"$ift" eval --model "$base" --tasks "$run/data/eval_tasks.jsonl" "${eval_args[@]}" --out "$run/before_max.json" | tail -n 3

step "LoRA training (configs/demo-lora.yaml: r 8 on every projection, the base frozen)"
"$ift" train configs/demo-lora.yaml --set "out_dir=$run" --set "model.path=$base" \
  --set "tokenizer=$base/tokenizer.model" --set "data.train=[$run/data/train.jsonl,$base/data/train.jsonl]" \
  --set "data.eval=[$run/data/eval_tasks.jsonl]" "$@"

step "after: the new task (held-out phrasings)"
"$ift" eval --model "$run" --tasks "$run/data/eval_tasks.jsonl" "${eval_args[@]}" --out "$run/after_max.json" | tail -n 3

step "after: the demo's six tasks (held-out phrasings)"
"$ift" eval --model "$run" --tasks "$base/data/eval_tasks.jsonl" "${eval_args[@]}" --out "$run/after_old.json" | tail -n 8
if [ ! -f "$base/eval_tasks.json" ]; then  # tools/demo.sh wrote it; else score the base again
  "$ift" eval --model "$base" --tasks "$base/data/eval_tasks.jsonl" "${eval_args[@]}" --out "$base/eval_tasks.json" >/dev/null
fi

step "a few answers of base + adapter"
ask() {
  printf '> %s | %s\n' "$1" "$2"
  "$ift" generate --model "$run" --template configs/demo-template.yaml --prompt "$1" --input "$2" --max-new-tokens 16
}
ask "Name the largest number." "3 8 1 5"
ask "Tell me the highest value." "4 2 7"
ask "Arrange the numbers in ascending order." "7 2 9 4"

step "summary: held-out exact match"
acc() { grep -m1 -A1 '"overall"' "$1" | sed -n 's/.*"accuracy": *\([0-9.e-]*\).*/\1/p'; }
printf '%-22s %8s %8s\n' "" base "+ LoRA"
printf '%-22s %8s %8s\n' "max (new)" "$(acc "$run/before_max.json")" "$(acc "$run/after_max.json")"
printf '%-22s %8s %8s\n' "the demo's six tasks" "$(acc "$base/eval_tasks.json")" "$(acc "$run/after_old.json")"
