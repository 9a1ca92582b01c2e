#!/usr/bin/env bash
# Peak memory of `ift prepare` against the size of its input (docs/benchmarks.md, "prepare's
# memory"). prepare streams its files, so its peak RSS grows with the packed output (the tokens it
# keeps) and not with the input text.
#
#   tools/bench_prepare_memory.sh [IFT_BINARY] [TOKENIZER] [MODE:SIZE ...]
#
# Each MODE:SIZE generates an Alpaca JSONL file into a scratch directory under /tmp (deleted
# afterwards) and runs `ift prepare --seq-len 2048 --on-bad skip` on it under /usr/bin/time:
#   keep:MIB   records of ~1 KiB, every one kept: the output grows with the input;
#   skip:MIB   the same, but 63 in 64 records have an empty output: they are read and parsed, then
#              skipped as bad input before tokenizing, so the input grows and the output stays small;
#   many:N     N short records (~60 bytes), every one kept: a many-sample dataset.
# Prints one table row per run: input size, records, kept samples, packed file size, peak RSS,
# seconds. Defaults: build/tools/ift, the GPT-2 tokenizer fixture, keep:64 skip:64 skip:2200
# many:1000000.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
ift=${1:-$src/build/tools/ift}
tokenizer=${2:-$src/tests/fixtures/tokenizers/gpt2/tokenizer.json}
shift $(($# > 2 ? 2 : $#)) || true
runs=("$@")
((${#runs[@]})) || runs=(keep:64 skip:64 skip:2200 many:1000000)
scratch=$(mktemp -d /tmp/ift-bench-prepare.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

# generate MIB EVERY WORDS: an Alpaca JSONL file of about MIB MiB (or of -MIB records when
# negative) whose outputs have WORDS words; all but every EVERY-th record have an empty output.
generate() {
  awk -v target="$1" -v every="$2" -v words="$3" 'BEGIN {
    srand(7); split("the a river stone cloud green quick seven north apple answer model token data train", w, " ");
    bytes = 0;
    for (i = 0; (target > 0) ? bytes < target * 1048576 : i < -target; ++i) {
      n = words + int(rand() * words / 3);
      out = "";
      if (i % every == 0) for (j = 0; j < n; ++j) out = out w[1 + int(rand() * 15)] " ";
      else out = "";
      pad = (i % every == 0) ? "" : sprintf("%" (n * 6) "s", "");
      line = "{\"instruction\": \"Say it again, number " i ".\", \"input\": \"" pad "\", \"output\": \"" out "\"}";
      print line; bytes += length(line) + 1;
    }
  }' > "$scratch/data.jsonl"
}

printf '| run | input | records | kept | train.pack | peak RSS | seconds |\n|---|---|---|---|---|---|---|\n'
for run in "${runs[@]}"; do
  mode=${run%%:*} size=${run#*:}
  case "$mode" in
    keep) generate "$size" 1 170 ;;
    skip) generate "$size" 64 170 ;;
    many) generate "-$size" 1 6 ;;
    *) echo "unknown run $run (keep:MIB, skip:MIB, many:N)" >&2; exit 2 ;;
  esac
  rm -rf "$scratch/out"
  /usr/bin/time -f '%M %e' -o "$scratch/time" "$ift" prepare --data "$scratch/data.jsonl" --tokenizer "$tokenizer" \
    --template alpaca --seq-len 2048 --on-bad skip --out "$scratch/out" 2> "$scratch/log" > /dev/null
  read -r rss_kb secs < "$scratch/time"
  records=$(wc -l < "$scratch/data.jsonl")
  kept=$(sed -n 's/.*"samples_kept": \([0-9]*\).*/\1/p' "$scratch/out/report.json")
  pack=$(stat -c %s "$scratch/out/train.pack")
  in_bytes=$(stat -c %s "$scratch/data.jsonl")
  printf '| %s | %.0f MiB | %d | %d | %.1f MiB | %.0f MiB | %s |\n' "$run" "$(bc -l <<< "$in_bytes/1048576")" \
    "$records" "$kept" "$(bc -l <<< "$pack/1048576")" "$(bc -l <<< "$rss_kb/1024")" "$secs"
  rm -f "$scratch/data.jsonl"
done
