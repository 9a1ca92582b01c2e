#!/usr/bin/env bash
# Turns a few minutes of a GPU machine into recorded facts, from binaries built on another machine
# (docs/gpu.md: the build recipe, tools/gpu_bundle.sh, how to carry them and read the summary).
#
#   tools/gpu_check.sh BUILD_DIR OUT_DIR [--dry-run] [--backend cuda|emu]
#
# BUILD_DIR: a build tree, or the bundle tools/gpu_bundle.sh made of one (BUILD_DIR/carry). Nothing
# is compiled. Every step runs under its own `timeout`, inside one budget for the whole run
# ($IFT_GPU_CHECK_BUDGET seconds, default 285: under 5 minutes on one H100/H200), so one hang
# cannot eat the rest; a step the budget no longer fits is skipped. Every file goes under OUT_DIR,
# one folder per step, and OUT_DIR/summary.txt gets one line per step:
#
#   STEP                     passed|failed|skipped  FIGURE (what was measured, or why)
#
# Steps, most valuable first: env (nvidia-smi, driver and runtime versions, ldd of the binaries),
# tests.cuda (every [cuda] test case, twice, IFT_SYNC_LAUNCHES=1, loss and tensor bits compared
# between the runs), kernels.gpu (the kernel tests against the nvcc build), mma.dump (the hardware's
# fragment registers), attention.cudnn (cuDNN's fused attention in a bf16 step against the CPU
# reference), sanitize.memcheck /
# racecheck / synccheck / initcheck (compute-sanitizer on a small model step), check.sizes
# (`ift bench kernels --check`), bench.kernels.gpt2, bench.kernels.llama3-8b, bench.train.
#
# --dry-run: on any machine, checks that the binaries and inputs are there, resolves the binaries'
# libraries (ldd) and lists the steps with their commands; exit 0 when everything needed is there.
# --backend emu: the rehearsal without a GPU (registered with ctest): the same steps and summary,
# with the emu backend where a step can run on it (determinism of the kernel path, the emulated
# kernel tests, `ift bench train --backend emu` on a tiny model); the GPU-only steps are skipped.
# Exit status: 0 when no step failed, 1 when one did, 2 on bad usage.
set -uo pipefail  # pipes never end in `grep -q`: it would exit early and the writer die of SIGPIPE

usage() {
  echo "usage: tools/gpu_check.sh BUILD_DIR OUT_DIR [--dry-run] [--backend cuda|emu]" >&2
  exit 2
}

dry_run=0
backend=cuda
positional=()
while (($#)); do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --backend)
      (($# >= 2)) || usage
      backend=$2
      shift
      ;;
    --backend=*) backend=${1#--backend=} ;;
    -h | --help) usage ;;
    -*) echo "gpu_check: unknown option '$1'" >&2 && usage ;;
    *) positional+=("$1") ;;
  esac
  shift
done
((${#positional[@]} == 2)) || usage
[[ $backend == cuda || $backend == emu ]] || { echo "gpu_check: --backend must be cuda or emu, got '$backend'" >&2; usage; }
[[ -d ${positional[0]} ]] || { echo "gpu_check: BUILD_DIR '${positional[0]}' is not a directory" >&2; exit 2; }

src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${positional[0]}" && pwd)
mkdir -p "${positional[1]}" || exit 2
out=$(cd "${positional[1]}" && pwd)
summary=$out/summary.txt

# Libraries carried with the binaries (tools/gpu_bundle.sh) come first, so the binaries start on a
# machine without Debian's packages; the CUDA toolkit's own folder last, where it is not on the
# linker's path.
ld_path=$build/lib:$build/carry/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [[ -d $d ]] && ld_path=$ld_path:$d
done
export LD_LIBRARY_PATH=$ld_path
# CUDA's libraries where the loader still does not find them: the toolkit may sit in a versioned
# folder, or come as Python's nvidia-* wheels. Searched under $IFT_CUDA_LIB_SEARCH. cuDNN (linked for
# `attention: cudnn`; its libraries, ~1 GiB, are never carried) is looked for first where Python
# finds the nvidia-cudnn wheel that PyTorch installs (site-packages/nvidia/cudnn/lib).
python_cudnn_lib() {
  local py
  for py in python3 python; do
    command -v "$py" > /dev/null || continue
    timeout 20 "$py" -c 'import importlib.util as u, os
s = u.find_spec("nvidia.cudnn")
print(os.path.join(list(s.submodule_search_locations)[0], "lib") if s else "")' 2> /dev/null && return
  done
}
cuda_found=()
if [[ -x ${positional[0]}/tools/ift ]]; then
  for name in $(ldd "${positional[0]}/tools/ift" 2> /dev/null | awk '/not found/ && $1 ~ /^lib(cudart|cublas|cublasLt|cudnn)\.so/ {print $1}'); do
    found=""
    if [[ $name == libcudnn.so* ]]; then
      found=$(python_cudnn_lib)
      [[ -n $found && -f $found/$name ]] && found=$found/$name || found=""
    fi
    # shellcheck disable=SC2086  # a list of folders
    [[ -z $found ]] && found=$(timeout 20 find ${IFT_CUDA_LIB_SEARCH:-/usr/local /opt /usr/lib} -maxdepth 8 -name "$name" -print -quit 2> /dev/null)
    if [[ -n $found ]]; then
      found=$(dirname "$found")
      export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$found
      cuda_found+=("$name in $found")
    fi
  done
fi
# The tests read their fixtures from this checkout, not from the build machine's source path.
export IFT_FIXTURES_DIR=${IFT_FIXTURES_DIR:-$src/tests/fixtures}

budget=${IFT_GPU_CHECK_BUDGET:-285}
started=$SECONDS
failed_steps=0

# ---- binaries and inputs ---------------------------------------------------------------------------

ift=$build/tools/ift
test_engine=$build/tests/engine/test_engine
test_kernels_gpu=$build/tests/kernels/test_kernels_gpu
# The emulated kernel test the rehearsal runs in the place of the GPU kernel tests: the same step
# logic (run a Catch2 binary, read its totals), seconds on two cores.
test_kernels_emu=$build/tests/kernels/test_kernels_rope
sanitizer=$(command -v compute-sanitizer || true)
[[ -z $sanitizer && -x /usr/local/cuda/bin/compute-sanitizer ]] && sanitizer=/usr/local/cuda/bin/compute-sanitizer

# What the steps run, named once for the run and the dry run's plan.
if [[ $backend == cuda ]]; then
  tests_filter='[cuda]'
  train_args=(--backend cuda --precision bf16 --model gpt2-124m --batch 8 --seq-len 1024 --steps 5 --json)
else
  tests_filter='emu fp32 equals cpu on the golden models - recompute changes nothing'
  train_args=(--backend emu --model llama-demo --batch 1 --seq-len 16 --steps 1 --json)
fi
# Llama-3-8B's activations (C 4096, 32 heads of 128, V 128256, 8192 tokens in one packed row);
# `bench kernels` has no key-value head option. AdamW runs over 2e9 values, not 8e9: that would be
# 128 GB of optimizer state in a 141 GB card, and past 2^31 values, which check.sizes covers.
llama_args=(--batch 1 --seq-len 8192 --channels 4096 --heads 32 --vocab 128256 --params 2000000000 --dtype bf16
            --warmup 1 --reps 5)

# The binaries every step of this backend needs, the optional ones (a step skips without them).
required=("$ift" "$test_engine")
optional=()
if [[ $backend == cuda ]]; then
  optional+=("$test_kernels_gpu")
else
  required+=("$test_kernels_emu")
fi
inputs=("$IFT_FIXTURES_DIR/golden/gpt2/config.json" "$IFT_FIXTURES_DIR/golden/llama_gqa/config.json"
        "$IFT_FIXTURES_DIR/golden/llama_tied/config.json")

# ---- the summary -----------------------------------------------------------------------------------

# record STEP passed|failed|skipped FIGURE...: one line of the summary, echoed.
record() {
  local step=$1 status=$2
  shift 2
  local line
  line=$(printf '%-24s %-7s %s' "$step" "$status" "$*")
  echo "$line" >> "$summary"
  echo "$line"
  [[ $status == failed ]] && failed_steps=$((failed_steps + 1))
  return 0
}

remaining() { echo $((budget - (SECONDS - started))); }

# timed STEP LIMIT LOG CMD...: runs CMD under `timeout`, its limit the smaller of LIMIT and what is
# left of the budget, stdout and stderr to LOG. Sets `took` (seconds). Returns CMD's status; 124 when
# it ran out of time; 125 (nothing run) when less than 5 seconds were left.
took=0
timed() {
  local limit=$2 log=$3 left
  shift 3
  left=$(remaining)
  ((left < limit)) && limit=$left
  if ((limit < 5)); then
    mkdir -p "$(dirname "$log")"
    echo "not run: the budget of ${budget} s was spent" > "$log"
    took=0
    return 125
  fi
  local t0=$SECONDS
  mkdir -p "$(dirname "$log")"
  echo "+ $* (timeout ${limit}s)" > "$log"
  timeout --kill-after=5 "$limit" "$@" >> "$log" 2>&1
  local rc=$?
  took=$((SECONDS - t0))
  ((rc == 137)) && rc=124  # killed after ignoring the TERM
  return $rc
}

# why RC LOG: a short reason for a failed command, for the summary.
why() {
  local rc=$1 log=$2
  case $rc in
    124) echo "timed out after ${took}s" ;;
    125) echo "skipped: budget spent" ;;
    *)
      local line
      line=$(grep -m1 -E 'FAILED|[Ee]rror|failed|Aborted|Segmentation|what\(\)|not available|unknown' "$log" | head -c 200)
      [[ -z $line ]] && line=$(tail -n1 "$log" | head -c 200)
      echo "exit $rc: ${line:-no output}"
      ;;
  esac
}

# catch_totals LOG: "N test cases, M assertions" from a Catch2 run's last lines.
catch_totals() {
  local log=$1 line
  line=$(grep -E '^All tests passed|^test cases:|^No test cases matched' "$log" | tail -n1)
  if [[ $line =~ \(([0-9]+)\ assertions?\ in\ ([0-9]+)\ test\ cases?\) ]]; then
    echo "${BASH_REMATCH[2]} test case(s), ${BASH_REMATCH[1]} assertions passed"
  elif [[ $line =~ ^test\ cases:\ +([0-9]+)\ .*\ ([0-9]+)\ failed ]]; then
    echo "${BASH_REMATCH[2]} of ${BASH_REMATCH[1]} test cases failed"
  elif [[ -n $line ]]; then
    echo "$line"
  else
    echo "no Catch2 totals in the output"
  fi
}

# ---- steps -----------------------------------------------------------------------------------------

# ldd_check LOG BINARIES...: every library of every binary resolves; prints the missing ones.
ldd_check() {
  local log=$1 missing=()
  shift
  : > "$log"
  for bin in "$@"; do
    [[ -x $bin ]] || continue
    echo "== $bin" >> "$log"
    ldd "$bin" >> "$log" 2>&1
    while read -r name; do missing+=("$(basename "$bin"): $name"); done < <(ldd "$bin" 2>&1 | awk '/not found/ {print $1}')
  done
  echo "${missing[*]}"
}

step_env() {
  local dir=$out/env
  mkdir -p "$dir"
  local figure=() status=passed
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "host: $(uname -a)"
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "IFT_FIXTURES_DIR=$IFT_FIXTURES_DIR"
    echo "compute-sanitizer: ${sanitizer:-absent}"
    ((${#cuda_found[@]})) && echo "found by search: ${cuda_found[*]}"
    [[ -n $sanitizer ]] && timeout 20 "$sanitizer" --version 2>&1 | tail -n1
  } > "$dir/machine.txt"
  if [[ $backend == cuda ]]; then
    if command -v nvidia-smi > /dev/null; then
      timed env 20 "$dir/nvidia-smi.txt" nvidia-smi
      timed env 20 "$dir/nvidia-smi-query.txt" nvidia-smi \
        --query-gpu=name,driver_version,memory.total,clocks.max.sm,compute_cap --format=csv,noheader
      local gpu
      gpu=$(sed -n 2p "$dir/nvidia-smi-query.txt")
      local cuda_driver
      cuda_driver=$(grep -o 'CUDA Version: *[0-9.]*' "$dir/nvidia-smi.txt" | head -n1)
      if [[ -n $gpu ]]; then
        figure+=("$gpu; driver's ${cuda_driver:-CUDA version unknown}")
      else
        status=failed
        figure+=("nvidia-smi lists no GPU: $(why 1 "$dir/nvidia-smi.txt")")
      fi
    else
      status=failed
      figure+=("no nvidia-smi on this machine")
    fi
  else
    figure+=("backend emu: no GPU queried")
  fi
  ((${#cuda_found[@]})) && figure+=("found ${cuda_found[*]}")
  local runtime
  runtime=$(ldd "$ift" 2> /dev/null | awk '/libcudart/ {print $3}')
  if [[ -n $runtime ]]; then
    runtime=$(readlink -f "$runtime")
    figure+=("runtime $(basename "$runtime")")
  fi
  local missing
  missing=$(ldd_check "$dir/ldd.txt" "${required[@]}" "${optional[@]}")
  if [[ -n $missing ]]; then
    status=failed
    figure+=("missing libraries: $missing")
  else
    figure+=("every library resolves")
  fi
  local joined
  joined=$(printf '%s; ' "${figure[@]}")
  record env "$status" "${joined%; }"
}

# tests.cuda: every case tagged [cuda] (tests/engine/test_backends.cpp: the cuda backend against cpu
# on the golden models, ten AdamW steps, the memory plan), twice, each launch synchronised so that a
# fault names its kernel. The tests append the bits of every loss and a hash of every tensor to
# IFT_LOSS_LOG; the two runs must agree bit for bit. Without a device the cases return early and
# log nothing, which is a failure here. The emu rehearsal runs the emu golden case, the second time
# under a random thread schedule of the emulator (the kernels promise results independent of it).
step_tests() {
  local dir=$out/tests step=tests.$backend
  local env2=()
  [[ $backend == emu ]] && env2=(IFT_SIMT_SCHEDULE=random:7)
  local run rc=0 runs_took=0
  for run in 1 2; do
    rm -f "$dir/losses-$run.txt"
    local extra=()
    ((run == 2)) && extra=("${env2[@]}")
    timed "$step" 120 "$dir/run-$run.log" env IFT_SYNC_LAUNCHES=1 IFT_LOSS_LOG="$dir/losses-$run.txt" "${extra[@]}" \
      "$test_engine" "$tests_filter" --durations yes
    rc=$?
    runs_took=$((runs_took + took))
    if ((rc != 0)); then
      record "$step" failed "run $run: $(why $rc "$dir/run-$run.log"); $(catch_totals "$dir/run-$run.log")"
      return
    fi
  done
  local lines
  lines=$(grep -c "^$backend " "$dir/losses-1.txt" 2> /dev/null)
  if ((${lines:-0} == 0)); then
    local warn
    warn=$(grep -m1 -i 'no CUDA device' "$dir/run-1.log" | sed 's/^ *//' | head -c 160)
    record "$step" failed "the $backend cases logged no loss: they did not run (${warn:-no reason printed})"
    return
  fi
  if ! cmp -s "$dir/losses-1.txt" "$dir/losses-2.txt"; then
    diff "$dir/losses-1.txt" "$dir/losses-2.txt" > "$dir/losses.diff"
    local differ
    differ=$(grep -c '^<' "$dir/losses.diff")
    record "$step" failed "not deterministic: $differ of $lines loss lines differ between two runs (tests/losses.diff)"
    return
  fi
  record "$step" passed "$(catch_totals "$dir/run-1.log") twice; $lines loss and tensor hashes bit-identical across the runs (${runs_took}s)"
}

# kernels.gpu: the kernel tests of tests/kernels against the nvcc build, each kernel on its own.
step_kernels() {
  local dir=$out/kernels step bin
  if [[ $backend == cuda ]]; then
    step=kernels.gpu bin=$test_kernels_gpu
    if [[ ! -x $bin ]]; then
      record "$step" skipped "tests/kernels/test_kernels_gpu is not in the build (not built, or not yet a target)"
      return
    fi
  else
    step=kernels.emu bin=$test_kernels_emu
  fi
  timed "$step" 120 "$dir/$(basename "$bin").log" env IFT_SYNC_LAUNCHES=1 "$bin" --durations yes
  local rc=$?
  if ((rc == 0)); then
    record "$step" passed "$(catch_totals "$dir/$(basename "$bin").log") (${took}s)"
  else
    record "$step" failed "$(why $rc "$dir/$(basename "$bin").log"); $(catch_totals "$dir/$(basename "$bin").log")"
  fi
}

# The real per-lane registers of ldmatrix (x1/x2/x4, .trans) and mma.m16n8k16 for inputs that
# encode their (row, col), dumped by the "[mma][dump]" case of test_kernels_gpu: committed as
# tests/fixtures/mma_fragments.txt, it is what the emulated twins (kernels/simt/tensor_core.h) must
# reproduce bit for bit in the emulated test of the same case.
step_mma_dump() {
  local dir=$out/mma step=mma.dump
  if [[ $backend != cuda ]]; then
    record "$step" skipped "GPU only (the dump is of the hardware's registers)"
    return
  fi
  if [[ ! -x $test_kernels_gpu ]]; then
    record "$step" skipped "tests/kernels/test_kernels_gpu is not in the build"
    return
  fi
  timed "$step" 60 "$dir/dump.log" env IFT_MMA_DUMP="$dir/mma_fragments.txt" "$test_kernels_gpu" "[dump]"
  local rc=$?
  if ((rc == 0)) && [[ -s $dir/mma_fragments.txt ]]; then
    record "$step" passed "$(wc -l < "$dir/mma_fragments.txt") lines in mma/mma_fragments.txt: commit it as tests/fixtures/mma_fragments.txt (${took}s)"
  else
    record "$step" failed "$(why $rc "$dir/dump.log")"
  fi
}

# attention.cudnn: cuDNN's fused attention (`attention: cudnn`, engine/cuda/cudnn_attention.cpp) in
# a whole bf16 forward and backward at head dims 64 and 128 (GQA 4/2, two packed samples) against
# the CPU reference: the [cudnn] case of test_engine, which logs a "(cudnn attention)" line per head
# dim when it ran. Outside tests.cuda, whose runs must be bitwise equal: cuDNN's backward need not be.
step_attention_cudnn() {
  local dir=$out/cudnn step=attention.cudnn
  if [[ $backend != cuda ]]; then
    record "$step" skipped "GPU only (cuDNN's fused attention)"
    return
  fi
  rm -f "$dir/losses.txt"
  timed "$step" 90 "$dir/cudnn.log" env IFT_SYNC_LAUNCHES=1 IFT_LOSS_LOG="$dir/losses.txt" "$test_engine" '[cudnn]' \
    --durations yes
  local rc=$?
  if ((rc != 0)); then
    record "$step" failed "$(why $rc "$dir/cudnn.log"); $(catch_totals "$dir/cudnn.log")"
    return
  fi
  local ran
  ran=$(grep -c '(cudnn attention)' "$dir/losses.txt" 2> /dev/null)
  if ((${ran:-0} > 0)); then
    record "$step" passed "$(catch_totals "$dir/cudnn.log"); $ran cuDNN attention steps within the bf16 tolerance of cpu (${took}s)"
  elif grep -q 'has no cuDNN' "$dir/cudnn.log"; then
    record "$step" skipped "this build has no cuDNN (CMake found none)"
  else
    local warn
    warn=$(grep -m1 -iE 'no CUDA device|No test cases matched' "$dir/cudnn.log" | sed 's/^ *//' | head -c 160)
    record "$step" failed "the [cudnn] case logged nothing: it did not run (${warn:-no reason printed})"
  fi
}

# The small model step the sanitizers watch: `ift bench train --backend cuda` on the demo model at
# a tiny shape where the binary offers the cuda backend there, else the [cuda] test case of ten
# AdamW steps on two-layer models.
sanitize_target() {
  if "$ift" bench train --help 2>&1 | grep -- '--backend' | grep cuda > /dev/null; then
    echo "$ift bench train --backend cuda --model llama-demo --batch 2 --seq-len 64 --steps 1"
  else
    echo "$test_engine cuda: ten AdamW steps follow cpu - the memory plan holds"
  fi
}

step_sanitize() {
  local tool=$1 step=sanitize.$1 dir=$out/sanitize
  if [[ $backend != cuda ]]; then
    record "$step" skipped "GPU only (compute-sanitizer)"
    return
  fi
  if [[ -z $sanitizer ]]; then
    record "$step" skipped "compute-sanitizer is not on this machine"
    return
  fi
  local target
  target=$(sanitize_target)
  local cmd
  if [[ $target == "$test_engine "* ]]; then
    cmd=("$test_engine" "${target#"$test_engine "}")
  else
    read -r -a cmd <<< "$target"
  fi
  local extra=()
  [[ $tool == racecheck ]] && extra=(--racecheck-report analysis)
  [[ $tool == initcheck ]] && extra=(--track-unused-memory no)
  timed "$step" 50 "$dir/$tool.log" "$sanitizer" --tool "$tool" --error-exitcode 86 --print-limit 20 "${extra[@]}" \
    "${cmd[@]}"
  local rc=$?
  local errors
  errors=$(grep -m1 -oE 'ERROR SUMMARY: [0-9]+ errors?|RACECHECK SUMMARY: [0-9]+ hazards? displayed \([^)]*\)' "$dir/$tool.log")
  if ((rc == 0)); then
    record "$step" passed "${errors:-no report} on ${cmd[0]##*/} (${took}s)"
  elif ((rc == 86)); then
    record "$step" failed "${errors:-errors reported}: see sanitize/$tool.log"
  else
    record "$step" failed "$(why $rc "$dir/$tool.log")"
  fi
}

# check.sizes: the sizes the emulator cannot run, against the CPU reference on sampled rows.
step_check() {
  local dir=$out/check step=check.sizes
  if [[ $backend != cuda ]]; then
    record "$step" skipped "GPU only (ift bench kernels --check)"
    return
  fi
  if ! "$ift" bench kernels --help 2>&1 | grep -- '--check' > /dev/null; then
    record "$step" skipped "this ift has no 'bench kernels --check'"
    return
  fi
  timed "$step" 90 "$dir/check.log" "$ift" bench kernels --check
  local rc=$?
  if ((rc == 0)) && ! grep -q 'no CUDA device' "$dir/check.log"; then
    record "$step" passed "$(grep -ciE '\b(ok|pass(ed)?)\b' "$dir/check.log") checks reported passing (${took}s)"
  elif ((rc == 0)); then
    record "$step" failed "$(grep -m1 'no CUDA device' "$dir/check.log")"
  else
    record "$step" failed "$(why $rc "$dir/check.log")"
  fi
}

# bench.kernels.NAME ARGS...: `ift bench kernels --json` at one shape.
step_bench_kernels() {
  local name=$1 step=bench.kernels.$1 dir=$out/bench
  shift
  if [[ $backend != cuda ]]; then
    record "$step" skipped "GPU only (ift bench kernels)"
    return
  fi
  timed "$step" 60 "$dir/kernels-$name.log" "$ift" bench kernels --json "$@"
  local rc=$?
  # The JSON document alone, for tools that read it.
  sed -n '/^{/,/^}/p' "$dir/kernels-$name.log" > "$dir/kernels-$name.json"
  local n
  n=$(grep -c '"kernel":' "$dir/kernels-$name.json")
  if ((rc == 0 && n > 0)); then
    local device
    device=$(grep -m1 '"name":' "$dir/kernels-$name.json" | sed 's/.*"name": *"\([^"]*\)".*/\1/')
    record "$step" passed "$n kernels timed on $device (bench/kernels-$name.json, ${took}s)"
  elif ((rc == 0)); then
    record "$step" failed "no results: $(tail -n1 "$dir/kernels-$name.log" | head -c 200)"
  else
    record "$step" failed "$(why $rc "$dir/kernels-$name.log")"
  fi
}

# json_field FILE NAME: a number of a one-line JSON object, or nothing.
json_field() { grep -o "\"$2\": *[-0-9.eE+]*" "$1" | head -n1 | sed 's/.*: *//'; }

# bench.train: whole training steps of GPT-2 124M at B=8 T=1024 on the cuda backend (tokens/s, MFU,
# peak device memory); the rehearsal times the demo model on emu at a tiny shape.
step_bench_train() {
  local dir=$out/bench step=bench.train
  local args=("${train_args[@]}")
  timed "$step" 90 "$dir/train.log" "$ift" bench train "${args[@]}"
  local rc=$?
  grep '^{' "$dir/train.log" | tail -n1 > "$dir/train.json"
  if ((rc == 0)) && [[ -s $dir/train.json ]]; then
    local f=() v key
    for key in tokens_per_s mfu median_ms allocated_mib; do
      v=$(json_field "$dir/train.json" $key)
      [[ -n $v ]] && f+=("$key $v")
    done
    # Whatever the peak memory is called (device or resident), it is reported.
    v=$(grep -oE '"peak[a-z_]*": *[0-9.eE+]*' "$dir/train.json" | tr -d '"' | tr '\n' ' ')
    [[ -n $v ]] && f+=("$v")
    local figures
    figures=$(printf '%s, ' "${f[@]}")
    record "$step" passed "${figures%, } (${args[*]:0:8}, ${took}s)"
  else
    record "$step" failed "$(why $rc "$dir/train.log")"
  fi
}

# ---- the plan --------------------------------------------------------------------------------------

# Each entry: the step's function and its arguments.
steps=(env tests kernels mma_dump attention_cudnn "sanitize memcheck" "sanitize racecheck" "sanitize synccheck" "sanitize initcheck" check
       "bench_kernels gpt2" "bench_kernels llama3-8b ${llama_args[*]}" bench_train)
# The plan the dry run prints: what each step runs.
plan_steps() {
  local k=kernels.gpu bin=$test_kernels_gpu gpu_only=""
  [[ $backend == emu ]] && k=kernels.emu bin=$test_kernels_emu gpu_only=" (GPU only: skipped on emu)"
  printf '%-24s %s\n' env "nvidia-smi (cuda only), ldd of ${required[*]##*/} ${optional[*]##*/}" \
    "tests.$backend" "IFT_SYNC_LAUNCHES=1 IFT_LOSS_LOG=... test_engine '$tests_filter', twice, logs compared" \
    "$k" "IFT_SYNC_LAUNCHES=1 ${bin#"$build"/}" \
    mma.dump "IFT_MMA_DUMP=mma/mma_fragments.txt test_kernels_gpu '[dump]'$gpu_only" \
    attention.cudnn "IFT_LOSS_LOG=cudnn/losses.txt test_engine '[cudnn]'$gpu_only" \
    sanitize.TOOL "compute-sanitizer --tool memcheck|racecheck|synccheck|initcheck $(sanitize_target)$gpu_only" \
    check.sizes "ift bench kernels --check$gpu_only" \
    bench.kernels.gpt2 "ift bench kernels --json$gpu_only" \
    bench.kernels.llama3-8b "ift bench kernels --json ${llama_args[*]}$gpu_only" \
    bench.train "ift bench train ${train_args[*]}"
}

if ((dry_run)); then
  plan=$out/plan.txt
  : > "$plan"
  say() { echo "$*" | tee -a "$plan"; }
  say "gpu_check dry run: build $build, backend $backend, budget ${budget}s"
  say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ((${#cuda_found[@]})) && say "  found by search: ${cuda_found[*]}"
  problems=0
  for f in "${required[@]}"; do
    if [[ -x $f ]]; then say "  present   ${f#"$build"/}"; else say "  MISSING   ${f#"$build"/}"; problems=$((problems + 1)); fi
  done
  for f in "${optional[@]}"; do
    if [[ -x $f ]]; then say "  present   ${f#"$build"/}"; else say "  absent    ${f#"$build"/} (its step will be skipped)"; fi
  done
  for f in "${inputs[@]}"; do
    if [[ -f $f ]]; then say "  present   $f"; else say "  MISSING   $f"; problems=$((problems + 1)); fi
  done
  if [[ $backend == cuda ]]; then  # a build without CUDA has the same binaries, but no cuda backend
    for f in "$ift" "$test_engine"; do
      [[ -x $f ]] || continue
      if ldd "$f" 2> /dev/null | grep libcudart > /dev/null; then say "  CUDA build ${f#"$build"/} (links libcudart)"
      else say "  NOT CUDA   ${f#"$build"/} links no libcudart: configure with -DIFT_CUDA=ON"; problems=$((problems + 1)); fi
    done
  fi
  missing=$(ldd_check "$out/ldd.txt" "${required[@]}" "${optional[@]}")
  if [[ -n $missing ]]; then say "  MISSING libraries: $missing"; problems=$((problems + 1)); else say "  every library resolves (ldd.txt)"; fi
  say "  nvidia-smi: $(command -v nvidia-smi || echo absent here)"
  say "  compute-sanitizer: ${sanitizer:-absent here (the sanitize steps will be skipped)}"
  if [[ -x $ift ]]; then
    if "$ift" bench kernels --help 2>&1 | grep -- '--check' > /dev/null; then say "  ift bench kernels --check: offered"; else say "  ift bench kernels --check: not offered (check.sizes will be skipped)"; fi
    say "  ift bench train --backend: $("$ift" bench train --help 2>&1 | grep -- '--backend' | sed 's/^ *//')"
    say "  sanitizer target: $(sanitize_target)"
  fi
  say "steps (in order, each under its own timeout, inside the budget):"
  while read -r line; do say "  $line"; done < <(plan_steps)
  if ((problems)); then
    say "dry run: $problems missing"
    exit 1
  fi
  say "dry run: everything needed is there"
  exit 0
fi

{
  echo "# gpu_check $(date -u +%FT%TZ) on $(hostname), backend $backend, build $build"
  echo "# step                   status  figure"
} > "$summary"
for f in "${required[@]}"; do
  [[ -x $f ]] || { record setup failed "missing $f (run with --dry-run to see what is needed)"; exit 1; }
done
for s in "${steps[@]}"; do
  read -r -a words <<< "$s"
  "step_${words[0]}" "${words[@]:1}"
done
echo "# done in $((SECONDS - started))s, $failed_steps failed" >> "$summary"
echo "summary: $summary ($((SECONDS - started))s, $failed_steps failed)"
((failed_steps == 0))
