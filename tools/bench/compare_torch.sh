#!/usr/bin/env bash
# One training step, timed by ift (`ift bench train`) and by PyTorch (tools/bench/bench_torch.py) in
# the same invocation, same shapes (GPT-2 presets, or llama-demo: the demo's model), fp32, same
# thread count; prints each and the ratios, one line per PyTorch.
#
#   tools/bench/compare_torch.sh [IFT_BINARY] [MODEL B T STEPS THREADS]
#   default: build/tools/ift gpt2-124m 4 256 5 $(nproc)
#
# ROUNDS (default 3): the programs run in turn, ift then each PyTorch, ROUNDS times over (a machine
# whose speed drifts moves them alike); each round's ratio is printed and the median of the rounds
# is the figure to quote.
#
# TORCH_PYTHON: the Python interpreters (or virtual environments) to run PyTorch in, space-separated,
# each one a column; default /usr/bin/python3 (Debian's python3-torch 1.13, `apt-get install
# python3-torch`). Today's PyTorch in a venv of its own: the CPU build from PyTorch's index, or,
# where only PyPI is reachable, PyPI's default wheel (a CUDA build, 5 GiB installed, whose CPU path
# is the same MKL/oneDNN one):
#
#   python3 -m venv /tmp/torchvenv
#   /tmp/torchvenv/bin/pip install numpy torch --index-url https://download.pytorch.org/whl/cpu  # or: pip install numpy torch
#   TORCH_PYTHON="/tmp/torchvenv /usr/bin/python3" tools/bench/compare_torch.sh build/tools/ift llama-demo 4 256 20 2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ift=${1:-build/tools/ift}
model=${2:-gpt2-124m} B=${3:-4} T=${4:-256} steps=${5:-5} threads=${6:-$(nproc)}
rounds=${ROUNDS:-3}
read -r -a pythons <<< "${TORCH_PYTHON:-/usr/bin/python3}"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
results=()
for ((r = 1; r <= rounds; ++r)); do
  results+=("ift $("$ift" bench train --model "$model" --batch "$B" --seq-len "$T" --steps "$steps" --threads "$threads" --json)")
  for py in "${pythons[@]}"; do
    [ -d "$py" ] && py=$py/bin/python  # a virtual environment
    results+=("torch $(OMP_NUM_THREADS=$threads "$py" "$here/bench_torch.py" --model "$model" --batch "$B" --seq-len "$T" \
                       --steps "$steps" --threads "$threads" 2>/dev/null)")
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$rounds" "${results[@]}" <<'PY'
import json, statistics, sys
rounds = int(sys.argv[1])
runs = [(w.split(" ", 1)[0], json.loads(w.split(" ", 1)[1])) for w in sys.argv[2:]]
per = len(runs) // rounds
a0 = runs[0][1]
print(f"{a0['model']} B={a0['batch']} T={a0['seq_len']} threads={a0['threads']}, {rounds} rounds; {a0['gemm']}")
ratios = {}
for r in range(rounds):
    a = runs[r * per][1]
    print(f"  round {r + 1}: ift {a['tokens_per_s']:8.0f} tokens/s  {a['median_ms']:8.1f} ms/step  peak RSS "
          f"{a['peak_rss_mb']:.0f} MiB  MFU {100*a['mfu_machine']:.1f}% of the machine's {a['machine_peak_gflops']:.0f} "
          f"GFLOP/s, {100*a['mfu']:.1f}% of its sgemm's {a['sgemm_peak_gflops']:.0f}")
    for _, b in runs[r * per + 1:(r + 1) * per]:
        ratios.setdefault(b["torch"], []).append((a["tokens_per_s"] / b["tokens_per_s"], a["peak_rss_mb"] / b["peak_rss_mb"],
                                                 b["tokens_per_s"]))
        print(f"           torch {b['torch']:<14}{b['tokens_per_s']:8.0f} tokens/s  {b['median_ms']:8.1f} ms/step  "
              f"peak RSS {b['peak_rss_mb']:.0f} MiB  ift/torch {a['tokens_per_s']/b['tokens_per_s']:.2f}x")
ift_tps = statistics.median(run["tokens_per_s"] for kind, run in runs if kind == "ift")
print(f"  median: ift {ift_tps:.0f} tokens/s")
for version, v in ratios.items():
    print(f"  median: torch {version}: {statistics.median(x[2] for x in v):.0f} tokens/s; ift/torch "
          f"{statistics.median(x[0] for x in v):.2f}x tokens/s (rounds {min(x[0] for x in v):.2f}-{max(x[0] for x in v):.2f}), "
          f"{statistics.median(x[1] for x in v):.2f}x peak memory")
PY
