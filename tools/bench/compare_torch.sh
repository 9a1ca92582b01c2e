#!/usr/bin/env bash
# One training step, timed by ift (`ift bench train`) and by PyTorch (tools/bench/bench_torch.py) in
# the same invocation, same shapes (GPT-2 presets, or llama-demo: the demo's model), fp32, same
# thread count; prints each and the ratios, one line per PyTorch.
#
#   tools/bench/compare_torch.sh [IFT_BINARY] [MODEL B T STEPS THREADS]
#   default: build/tools/ift gpt2-124m 4 256 5 $(nproc)
#
# TORCH_PYTHON: the Python interpreters (or virtual environments) to run PyTorch in, space-separated,
# each one a column; default /usr/bin/python3 (Debian's python3-torch 1.13, `apt-get install
# python3-torch`). Today's PyTorch from PyPI, CPU build (MKL), in a venv of its own:
#
#   python3 -m venv /tmp/torchvenv
#   /tmp/torchvenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
#   TORCH_PYTHON="/tmp/torchvenv /usr/bin/python3" tools/bench/compare_torch.sh build/tools/ift llama-demo 4 256 5 2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ift=${1:-build/tools/ift}
model=${2:-gpt2-124m} B=${3:-4} T=${4:-256} steps=${5:-5} threads=${6:-$(nproc)}
read -r -a pythons <<< "${TORCH_PYTHON:-/usr/bin/python3}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
ours=$("$ift" bench train --model "$model" --batch "$B" --seq-len "$T" --steps "$steps" --threads "$threads" --json)
theirs=()
for py in "${pythons[@]}"; do
  [ -d "$py" ] && py=$py/bin/python  # a virtual environment
  theirs+=("$(OMP_NUM_THREADS=$threads "$py" "$here/bench_torch.py" --model "$model" --batch "$B" --seq-len "$T" \
              --steps "$steps" --threads "$threads")")
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$ours" "${theirs[@]}" <<'PY'
import json, sys
a = json.loads(sys.argv[1])
print(f"{a['model']} B={a['batch']} T={a['seq_len']} threads={a['threads']}")
print(f"  ift            {a['tokens_per_s']:8.0f} tokens/s  {a['median_ms']:8.1f} ms/step  peak RSS {a['peak_rss_mb']:.0f} MiB  "
      f"MFU {100*a['mfu_machine']:.1f}% of the machine's {a['machine_peak_gflops']:.0f} GFLOP/s, "
      f"{100*a['mfu']:.1f}% of its sgemm's {a['sgemm_peak_gflops']:.0f}")
print(f"  {a['gemm']}")
for t in sys.argv[2:]:
    b = json.loads(t)
    print(f"  torch {b['torch']:<9}{b['tokens_per_s']:8.0f} tokens/s  {b['median_ms']:8.1f} ms/step  "
          f"peak RSS {b['peak_rss_mb']:.0f} MiB  ift/torch: {a['tokens_per_s']/b['tokens_per_s']:.2f}x tokens/s, "
          f"{a['peak_rss_mb']/b['peak_rss_mb']:.2f}x peak memory")
PY
