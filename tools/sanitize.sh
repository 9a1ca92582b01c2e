#!/usr/bin/env bash
# Builds the emulated kernel tests under a sanitizer and runs them (docs/emulator.md, "Sanitizer
# builds"). Registered in the main build as the ctest tests sanitize:address and sanitize:thread.
#
#   tools/sanitize.sh address|thread [BUILD_DIR]
#
# address: ASan + UBSan; every kernel test binary (test_kernels*, both schedules) and the
#          simt_faults cases that must be reported.
# thread:  TSan as a shared-memory race detector; the reduction-heavy kernels only (norm backward,
#          bias backward in elementwise, cross-entropy, AdamW / sum_of_squares, attention backward,
#          the tensor-core twins and attention) and the simt_faults race cases (a reduction, cp.async). Each test once, in its default schedule: TSan finds a
#          missing barrier whatever the order of the threads.
# BUILD_DIR defaults to build-sanitize-<kind> in the source tree. IFT_SANITIZE_JOBS sets the build
# and ctest parallelism (default: the number of cores).
set -euo pipefail

kind=${1:-}
case "$kind" in
  address | thread) ;;
  *)
    echo "usage: tools/sanitize.sh address|thread [BUILD_DIR]" >&2
    exit 2
    ;;
esac
src=$(cd "$(dirname "$0")/.." && pwd)
build=${2:-$src/build-sanitize-$kind}
jobs=${IFT_SANITIZE_JOBS:-$(nproc)}

if [[ $kind == address ]]; then
  targets=(test_kernels test_kernels_adamw test_kernels_attention test_kernels_ce test_kernels_elementwise
           test_kernels_norm test_kernels_rope test_kernels_mma test_kernels_decode test_kernels_dropout
           test_kernels_neftune test_kernels_nf4 simt_faults)
  select=(-L '^(test_kernels.*|simt_faults)$')
else
  targets=(test_kernels_adamw test_kernels_attention test_kernels_ce test_kernels_elementwise test_kernels_norm
           test_kernels_mma simt_faults)
  select=(-L '^(test_kernels_(adamw|attention|ce|elementwise|norm|mma)|simt_faults)$' -E '^schedule=random:')
fi

generator=()
command -v ninja > /dev/null && generator=(-G Ninja)
# -O1 -g1: the sanitizers' recommended optimisation, and the line tables their reports need, at a
# fraction of the compile time of -O2 -g (the build dominates the run). Without NDEBUG: the
# debug-only asserts are on.
cmake -S "$src" -B "$build" "${generator[@]}" -DIFT_CUDA=OFF -DIFT_SANITIZE="$kind" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1"
cmake --build "$build" -j "$jobs" --target "${targets[@]}"

# libgomp is not instrumented by TSan, and the CPU reference runs OpenMP loops: one thread.
export OMP_NUM_THREADS=1
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
ctest --test-dir "$build" "${select[@]}" -j "$jobs" --output-on-failure --no-tests=error
