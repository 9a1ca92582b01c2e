#!/usr/bin/env bash
# The README demo, end to end on the CPU: install, build, generate the synthetic instruction tasks,
# train a sentencepiece tokenizer and a small Llama-style model from scratch (configs/demo.yaml),
# score the untrained and the trained model by exact match on instruction phrasings held out of
# training, show a few answers, and write an HTML report. Trains on every core (docs/benchmarks.md has
# what it took and scored).
#
#   bash tools/demo.sh            (IFT_DEMO_DIR=DIR to put the run elsewhere; default runs/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
run=${IFT_DEMO_DIR:-runs/demo}
step() { printf '\n== %s\n' "$*"; }

step "install and build (the cpu path only: no CUDA, no tests)"
bash tools/setup.sh
cmake -S . -B build-demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DIFT_CUDA=OFF -DIFT_BUILD_TESTS=OFF >/dev/null
cmake --build build-demo --target ift
ift=build-demo/tools/ift

step "synthetic instruction tasks"
# reverse and uppercase (and sort) are the tasks a tiny model learns last, by copying tokens from its
# input: they get a larger share of the training examples (docs/benchmarks.md, the demo)
"$ift" synth --out "$run/data" --train 40000 --eval 300 --template configs/demo-template.yaml \
  --mix reverse=2,uppercase=2,sort=1

step "sentencepiece tokenizer trained on the task text"
"$ift" tokenizer train --input "$run/data/corpus.txt" --vocab-size 1024 --out "$run/tokenizer" --quiet

overrides=(--set "out_dir=$run" --set "tokenizer=$run/tokenizer.model" --set "data.train=[$run/data/train.jsonl]"
           --set "data.eval=[$run/data/eval_tasks.jsonl]")
eval_args=(--tasks "$run/data/eval_tasks.jsonl" --template configs/demo-template.yaml --examples 1)

step "the model before training (its random initialisation: one step at learning rate 1e-12)"
"$ift" train configs/demo.yaml "${overrides[@]}" --set "out_dir=$run/base" --set max_steps=1 \
  --set optimizer.lr=1e-12 --set schedule.warmup_steps=0 --set schedule.min_lr=0 >/dev/null 2>&1
"$ift" eval --model "$run/base" "${eval_args[@]}" --out "$run/base/eval_tasks.json" | tail -n 8

step "training (configs/demo.yaml)"
"$ift" train configs/demo.yaml "${overrides[@]}"

step "held-out instruction phrasings, greedy answers scored by exact match"
"$ift" eval --model "$run" "${eval_args[@]}" --out "$run/eval_tasks.json"

step "a few answers (instruction phrasings held out of training; inputs drawn like the training ones)"
ask() {
  printf '> %s | %s\n' "$1" "$2"
  "$ift" generate --model "$run" --template configs/demo-template.yaml --prompt "$1" --input "$2" --max-new-tokens 32
}
ask "Flip the word order." "moon star ship"
ask "Arrange the numbers in ascending order." "7 2 9 4"
ask "Calculate the sum of these two numbers." "6 and 9"
ask "Pick out the numeric value from the text." "big wolf 47 moon"

"$ift" report "$run"
