#!/usr/bin/env bash
# Data parallelism on the cpu backend: one process with 2 OpenMP threads and grad_accum 2, against
# `mpirun -np 2` with 1 thread each and grad_accum 1 (the same rows per step), alternated ROUNDS
# times in one invocation so that a busy machine slows both alike. Prints each run's tokens/s (the
# last metrics window: after the first steps' warm-up), the ratio np2 / np1 per round, and the bytes
# one rank sent per step (metrics.jsonl: comm_bytes_per_step).
#
#   tools/bench/dist_scaling.sh [IFT] [ROUNDS] [STEPS]
set -euo pipefail
ift=${1:-build/tools/ift}
rounds=${2:-3}
steps=${3:-8}
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d /tmp/ift-dist-scaling.XXXXXX)
trap 'rm -rf "$work"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,tcp OMPI_MCA_btl_tcp_if_include=lo \
  OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none

python3 - "$work/train.jsonl" <<'PY'
import json, sys
w = "apple river stone cloud green quick seven north".split()
with open(sys.argv[1], "w") as f:
    for i in range(512):
        words = " ".join(w[(i * 5 + k) % 8] for k in range(8 + i % 24))
        f.write(json.dumps({"instruction": "Repeat the words.", "input": words, "output": words}) + "\n")
PY
cat > "$work/c.yaml" <<YAML
seed: 1
tokenizer: $here/tests/fixtures/tokenizers/llama2/tokenizer.model
model:
  init: {model_type: llama, hidden_size: 128, num_hidden_layers: 4, num_attention_heads: 4, intermediate_size: 384, vocab_size: 32000}
data: {train: [$work/train.jsonl]}
seq_len: 256
micro_batch: 2
max_steps: $steps
log_every: $((steps / 2))
optimizer: {lr: 1.0e-3}
YAML
tps() { python3 -c "import json,sys; l=[json.loads(x) for x in open(sys.argv[1])]; print('%.0f %s' % (l[-1]['tokens_per_s'], l[-1].get('comm_bytes_per_step', '-')))" "$1"; }
echo "cpu backend, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $steps steps of 4 x 256-token rows"
for r in $(seq "$rounds"); do
  "$ift" train "$work/c.yaml" --set out_dir="$work/np1-$r" --set threads=2 --set grad_accum=2 > "$work/np1-$r.log" 2>&1
  mpirun -np 2 "$ift" train "$work/c.yaml" --set out_dir="$work/np2-$r" --set threads=1 --set grad_accum=1 > "$work/np2-$r.log" 2>&1
  read -r a _ < <(tps "$work/np1-$r/metrics.jsonl")
  read -r b bytes < <(tps "$work/np2-$r/metrics.jsonl")
  echo "round $r: np=1 x 2 threads $a tok/s, np=2 x 1 thread $b tok/s, ratio $(python3 -c "print('%.2f' % ($b / $a))"), $bytes bytes sent per step per rank"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
