#!/usr/bin/env bash
# One training step of a GPT-2 shape, timed by ift (`ift bench train`) and by PyTorch
# (tools/bench/bench_torch.py) in the same invocation, same shapes, fp32, same thread count; prints
# both and the ratios. Needs python3-torch (apt-get install python3-torch).
#
#   tools/bench/compare_torch.sh [IFT_BINARY] [MODEL B T STEPS THREADS]
#   default: build/tools/ift gpt2-124m 4 256 5 $(nproc)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ift=${1:-build/tools/ift}
model=${2:-gpt2-124m} B=${3:-4} T=${4:-256} steps=${5:-5} threads=${6:-$(nproc)}
py=${PYTHON:-/usr/bin/python3}  # Debian's, where python3-torch lives
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
ours=$("$ift" bench train --model "$model" --batch "$B" --seq-len "$T" --steps "$steps" --threads "$threads" --json)
theirs=$(OMP_NUM_THREADS=$threads "$py" "$here/bench_torch.py" --model "$model" --batch "$B" --seq-len "$T" \
         --steps "$steps" --threads "$threads")
python3 - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{a['model']} B={a['batch']} T={a['seq_len']} threads={a['threads']}")
print(f"  ift      {a['tokens_per_s']:8.0f} tokens/s  {a['median_ms']:8.1f} ms/step  MFU {100*a['mfu']:.1f}% "
      f"(sgemm peak {a['sgemm_peak_gflops']:.1f} GFLOP/s)  peak RSS {a['peak_rss_mb']:.0f} MiB")
print(f"  pytorch  {b['tokens_per_s']:8.0f} tokens/s  {b['median_ms']:8.1f} ms/step  (torch {b['torch']})"
      f"{'':34}peak RSS {b['peak_rss_mb']:.0f} MiB")
print(f"  ratio ift/pytorch: {a['tokens_per_s']/b['tokens_per_s']:.2f}x tokens/s, "
      f"{a['peak_rss_mb']/b['peak_rss_mb']:.2f}x peak memory")
PY
