#!/usr/bin/env bash
# shellcheck disable=SC2016  # the stand-ins' bodies are single-quoted: they expand when they run
# Tests of tools/gpu_check.sh on a machine without a GPU (registered with ctest by
# tests/tools/CMakeLists.txt). Every step of the script is exercised here except what only a GPU
# answers:
#
#   dry-run BUILD_DIR cuda|emu   the dry run passes on this build; on a build lacking test_engine it
#                                fails, naming it
#   rehearsal BUILD_DIR          the emu rehearsal on this build: the real tests twice with their loss
#                                bits compared (the second run under a random thread schedule), the
#                                emulated kernel tests, `ift bench train --backend emu`; the summary
#                                has every step in order, each passed, failed or skipped as it must
#   stubs cuda|emu               the script against stand-ins of every binary and tool it calls
#                                (nvidia-smi, ldd, compute-sanitizer, ift, the test binaries), one
#                                failure planted per step: a library that does not resolve, runs
#                                whose loss bits differ, cases that never ran for want of a device,
#                                a failing test case, a sanitizer hazard, a benchmark without
#                                results, a refused backend, a hang the budget must cut short; and
#                                libcudnn found where Python's nvidia-cudnn wheel keeps it
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
script=$src/tools/gpu_check.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=$tmp/out

fail() {
  echo "FAIL: $*" >&2
  [[ -f $out/summary.txt ]] && { echo "--- summary.txt:" >&2; cat "$out/summary.txt" >&2; }
  exit 1
}

# expect STEP STATUS REGEX: STEP's summary line has STATUS and a figure matching REGEX.
expect() {
  local line
  line=$(grep -E "^$1 " "$out/summary.txt") || fail "no summary line for step $1"
  [[ $line =~ ^[^\ ]+\ +$2\ +(.*)$ ]] || fail "step $1: expected $2, got: $line"
  [[ ${BASH_REMATCH[1]} =~ $3 ]] || fail "step $1: figure '${BASH_REMATCH[1]}' does not match /$3/"
  echo "ok: $line"
}

# The summary's form: comment lines, then one line per step (name, status, a figure), in order.
expect_steps() {
  local want=("$@") got=()
  while read -r line; do
    [[ $line =~ ^[a-z0-9.-]+\ +(passed|failed|skipped)\ +[^\ ].*$ ]] || fail "malformed summary line: $line"
    got+=("${line%% *}")
  done < <(grep -v '^#' "$out/summary.txt")
  [[ "${got[*]}" == "${want[*]}" ]] || fail "steps: got '${got[*]}', want '${want[*]}'"
}

steps_of() {  # the steps of a backend, in the script's order
  local k=kernels.gpu
  [[ $1 == emu ]] && k=kernels.emu
  echo "env tests.$1 $k mma.dump attention.cudnn sanitize.memcheck sanitize.racecheck sanitize.synccheck sanitize.initcheck check.sizes" \
    "bench.kernels.gpt2 bench.kernels.llama3-8b bench.train"
}

# ---- stand-ins ---------------------------------------------------------------------------------------

# stub NAME BODY: an executable script in $tmp/bin (on PATH) or a build tree's path.
stub() {
  mkdir -p "$(dirname "$1")"
  printf '#!/usr/bin/env bash\n%s\n' "$2" > "$1"
  chmod +x "$1"
}

make_stubs() {
  local build=$tmp/build mode=$1
  stub "$tmp/bin/nvidia-smi" '
if [[ $* == *--query-gpu* ]]; then echo "NVIDIA H200 (stub), 580.00, 143771 MiB, 1980 MHz, 9.0"; exit 0; fi
echo "| NVIDIA-SMI 580.00     Driver Version: 580.00     CUDA Version: 13.0 |"'
  # The real ldd, plus the CUDA runtime the binaries of a CUDA build link and, for test_engine, one
  # library that does not resolve (emu).
  stub "$tmp/bin/ldd" "
case \$(basename \"\$1\") in
  ift | test_engine) printf '\\tlibcudart.so.13 => /usr/local/cuda/lib64/libcudart.so.13 (0x0)\\n' ;;
esac
# cuda: libcublasLt resolves only once the script found its folder ($tmp/cuda/...).
if [[ $mode == cuda && \$(basename \"\$1\") == ift && \$LD_LIBRARY_PATH != *$tmp/cuda/* ]]; then
  printf '\\tlibcublasLt.so.13 => not found\\n'
fi
# cuda: libcudnn resolves only once the script found the wheel's folder ($tmp/py/...).
if [[ $mode == cuda && \$(basename \"\$1\") == ift && \$LD_LIBRARY_PATH != *$tmp/py/nvidia/cudnn/lib* ]]; then
  printf '\\tlibcudnn.so.9 => not found\\n'
fi
[[ \$(basename \"\$1\") == test_engine && $mode == emu ]] && printf '\\tlibopenblas.so.0 => not found\\n'
exit 0"
  stub "$tmp/bin/compute-sanitizer" '
[[ $1 == --version ]] && { echo "Version 2025.3.1 (stub)"; exit 0; }
tool=memcheck
while (($# >= 2)) && [[ $1 == --* ]]; do
  [[ $1 == --tool ]] && tool=$2
  shift 2
done
"$@" > /dev/null 2>&1
if [[ $tool == racecheck ]]; then echo "========= RACECHECK SUMMARY: 1 hazard displayed (1 error, 0 warnings)"; exit 86; fi
echo "========= ERROR SUMMARY: 0 errors"'
  # test_engine: emu logs loss bits that differ under a random schedule (not deterministic); cuda
  # logs nothing, as the cases do on a machine without a device.
  # Python: where the nvidia-cudnn wheel keeps libcudnn (the script asks it for the folder).
  stub "$tmp/bin/python3" "echo $tmp/py/nvidia/cudnn/lib"
  stub "$build/tests/engine/test_engine" '
if [[ $1 == "[cudnn]" ]]; then
  for d in 64 128; do
    echo "cuda bf16 llama L=2 C=32 V=67 N=93 forward-backward (cudnn attention) loss 40119a0000000000 hash 0000000000000$d" >> "$IFT_LOSS_LOG"
  done
  echo "All tests passed (84 assertions in 1 test case)"
  exit 0
fi
if [[ -n ${IFT_LOSS_LOG:-} && $1 != "[cuda]" ]]; then
  echo "emu fp32 gpt2 L=2 C=36 V=61 N=39 forward-backward loss 4013d28760000000 hash 9d729d3cbe8a49ba" >> "$IFT_LOSS_LOG"
  echo "emu fp32 gpt2 L=2 C=36 V=61 N=39 forward-backward (recompute) loss 4013d2876000000${IFT_SIMT_SCHEDULE:+1} hash 9d729d3cbe8a49ba" >> "$IFT_LOSS_LOG"
fi
[[ $1 == "[cuda]" ]] && echo "warning: no CUDA device, the cuda backend'"'"'s comparisons do not run"
echo "All tests passed (3 assertions in 2 test cases)"'
  stub "$build/tests/kernels/test_kernels_gpu" 'echo "All tests passed (1234 assertions in 56 test cases)"'
  stub "$build/tests/kernels/test_kernels_rope" '
echo "test_rope.cpp:10: FAILED:"
echo "test cases:  3 |  2 passed | 1 failed"
exit 1'
  stub "$build/tools/ift" '
if [[ "$1 $2" == "bench train" ]]; then
  [[ " $* " == *" --help "* ]] && { echo "  --backend NAME   backend (cpu) (default: cpu)"; exit 0; }
  [[ " $* " == *" --backend emu "* ]] && exec sleep 60  # a hang
  echo "ift bench: error: backend '"'"'$4'"'"' is not available (cpu)" >&2
  exit 1
fi
if [[ "$1 $2" == "bench kernels" ]]; then
  [[ " $* " == *" --help "* ]] && { echo "  --check   compare with the CPU reference"; exit 0; }
  [[ " $* " == *" --check "* ]] && { echo "attention D=128 ok"; echo "cross_entropy V=128256 ok"; exit 0; }
  [[ " $* " == *" --channels 4096 "* ]] && { echo "ift bench kernels: no CUDA device (no CUDA-capable device is detected)"; exit 0; }
  printf "{\n  \"device\": {\n    \"name\": \"NVIDIA H200 (stub)\"\n  },\n  \"results\": [\n"
  printf "    {\"kernel\": \"layernorm_forward\"},\n    {\"kernel\": \"matmul_qkv\"}\n  ]\n}\n"
  exit 0
fi
exit 2'
}

# ---- modes ------------------------------------------------------------------------------------------

mode=${1:-}
case "$mode" in
  dry-run)
    build=$2 backend=$3
    "$script" "$build" "$out" --dry-run --backend "$backend" || fail "the dry run on $build failed"
    grep -q '^dry run: everything needed is there' "$out/plan.txt" || fail "no verdict in plan.txt"
    # A build lacking a binary: the dry run fails and names it.
    mkdir -p "$tmp/partial/tools"
    ln -s "$build/tools/ift" "$tmp/partial/tools/ift"
    if "$script" "$tmp/partial" "$tmp/out2" --dry-run --backend "$backend" > "$tmp/partial.log" 2>&1; then
      fail "the dry run passed on a build without test_engine"
    fi
    grep -q 'MISSING   tests/engine/test_engine' "$tmp/partial.log" || fail "the dry run did not name test_engine"
    echo "ok: dry run ($backend) passes on $build and names what a partial build lacks"
    ;;

  rehearsal)
    build=$2
    rc=0
    "$script" "$build" "$out" --backend emu || rc=$?
    read -r -a want <<< "$(steps_of emu)"
    expect_steps "${want[@]}"
    expect env passed 'every library resolves'
    expect tests.emu passed 'passed twice; [1-9][0-9]* loss and tensor hashes bit-identical'
    expect kernels.emu passed '[1-9][0-9]* test case\(s\), [0-9]+ assertions passed'
    for s in attention.cudnn sanitize.memcheck sanitize.racecheck sanitize.synccheck sanitize.initcheck check.sizes \
      bench.kernels.gpt2 bench.kernels.llama3-8b; do
      expect "$s" skipped 'GPU only'
    done
    # `ift bench train --backend emu` is being added: until then the refusal is reported, with its message.
    if "$build/tools/ift" bench train --help 2>&1 | grep -- '--backend' | grep emu > /dev/null; then
      expect bench.train passed 'tokens_per_s [0-9]'
      ((rc == 0)) || fail "exit status $rc with every step passed or skipped"
    else
      expect bench.train failed "backend 'emu' is not available"
      ((rc == 1)) || fail "exit status $rc with a failed step"
    fi
    [[ -s $out/tests/losses-1.txt && -s $out/bench/train.log && -s $out/env/ldd.txt ]] || fail "files missing under OUT_DIR"
    ;;

  stubs)
    backend=$2
    make_stubs "$backend"
    export PATH=$tmp/bin:$PATH
    rc=0
    if [[ $backend == cuda ]]; then
      mkdir -p "$tmp/cuda/targets/lib" && : > "$tmp/cuda/targets/lib/libcublasLt.so.13"
      mkdir -p "$tmp/py/nvidia/cudnn/lib" && : > "$tmp/py/nvidia/cudnn/lib/libcudnn.so.9"
      IFT_CUDA_LIB_SEARCH=$tmp/cuda "$script" "$tmp/build" "$out" || rc=$?
      read -r -a want <<< "$(steps_of cuda)"
      expect_steps "${want[@]}"
      expect env passed '^NVIDIA H200 \(stub\), 580\.00.*CUDA Version: 13\.0; found libcublasLt.so.13 in .*/cuda/targets/lib.*every library resolves'
      expect env passed 'found .*libcudnn.so.9 in .*/py/nvidia/cudnn/lib'
      expect tests.cuda failed 'logged no loss: they did not run \(warning: no CUDA device'
      expect kernels.gpu passed '^56 test case\(s\), 1234 assertions passed'
      expect mma.dump failed '^exit 0: All tests passed'  # the stand-in writes no fragment dump
      expect attention.cudnn passed '^1 test case\(s\), 84 assertions passed; 2 cuDNN attention steps within the bf16 tolerance'
      expect sanitize.memcheck passed 'ERROR SUMMARY: 0 errors on test_engine'
      expect sanitize.racecheck failed 'RACECHECK SUMMARY: 1 hazard'
      expect sanitize.synccheck passed 'ERROR SUMMARY: 0 errors'
      expect sanitize.initcheck passed 'ERROR SUMMARY: 0 errors'
      expect check.sizes passed '^2 checks reported passing'
      expect bench.kernels.gpt2 passed '^2 kernels timed on NVIDIA H200 \(stub\)'
      expect bench.kernels.llama3-8b failed 'no results: ift bench kernels: no CUDA device'
      expect bench.train failed "exit 1: ift bench: error: backend 'cuda' is not available"
      [[ -s $out/bench/kernels-gpt2.json ]] || fail "bench/kernels-gpt2.json was not written"
    else
      # A budget of 12 s: the hang of `bench train` is cut short by it, not by the step's 90 s.
      IFT_GPU_CHECK_BUDGET=12 "$script" "$tmp/build" "$out" --backend emu || rc=$?
      read -r -a want <<< "$(steps_of emu)"
      expect_steps "${want[@]}"
      expect env failed 'missing libraries: test_engine: libopenblas.so.0'
      expect tests.emu failed 'not deterministic: 1 of 2 loss lines differ'
      expect kernels.emu failed 'exit 1: test_rope.cpp:10: FAILED:; 1 of 3 test cases failed'
      expect mma.dump skipped "GPU only"
      expect attention.cudnn skipped "GPU only"
      expect bench.train failed 'timed out after (9|1[0-9])s'
      grep -q '^> .*(recompute) loss 4013d28760000001' "$out/tests/losses.diff" || fail "tests/losses.diff lacks the differing line"
    fi
    ((rc == 1)) || fail "exit status $rc with failed steps"
    ;;

  *)
    echo "usage: tests/tools/test_gpu_check.sh dry-run BUILD_DIR cuda|emu | rehearsal BUILD_DIR | stubs cuda|emu" >&2
    exit 2
    ;;
esac
echo "passed: $*"
