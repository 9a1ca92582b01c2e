#!/usr/bin/env bash
# The libFuzzer harnesses of tests/fuzz (docs/testing.md, "Fuzzing"). Registered in the main build
# as the ctest tests fuzz:build and fuzz:<harness> (label fuzz), a few seconds each.
#
#   tools/fuzz.sh build [BUILD_DIR]                  configure and build the harnesses with clang
#   tools/fuzz.sh run HARNESS SECONDS [BUILD_DIR]    fuzz one harness for SECONDS from its corpus
#   tools/fuzz.sh all SECONDS [BUILD_DIR]            build, then every harness for SECONDS each
#
# HARNESS: safetensors model_config train_config tokenizer reader packed_file template.
# The committed corpus tests/fuzz/HARNESS/ is read, never written: inputs libFuzzer finds go to
# BUILD_DIR/corpus/HARNESS (kept between runs, so a long run continues where the last stopped),
# crashes to BUILD_DIR/crashes/HARNESS/. A crash makes the run fail; add the input to the committed
# corpus with the fix. One process, one core (IFT_FUZZ_JOBS=N runs N libFuzzer jobs in parallel).
# BUILD_DIR defaults to build-fuzz in the source tree. Exit 77 (ctest: skipped) when clang++ or
# libFuzzer is missing: apt-get install clang libclang-rt-14-dev (tools/setup.sh does).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
harnesses=(safetensors model_config train_config tokenizer reader packed_file template)
cmd=${1:-}
case "$cmd" in
  build) build=${2:-$src/build-fuzz} ;;
  run) harness=${2:?harness}; seconds=${3:?seconds}; build=${4:-$src/build-fuzz} ;;
  all) seconds=${2:?seconds}; build=${3:-$src/build-fuzz} ;;
  *)
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac

have_libfuzzer() {
  command -v clang++ > /dev/null || return 1
  local probe
  probe=$(mktemp -d)
  printf '%s\n' '#include <cstdint>' '#include <cstddef>' \
    'extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }' > "$probe/p.cpp"
  clang++ -fsanitize=fuzzer "$probe/p.cpp" -o "$probe/p" > /dev/null 2>&1
  local ok=$?
  rm -rf "$probe"
  return $ok
}

do_build() {
  if ! have_libfuzzer; then
    echo "fuzz: skipped: clang++ with libFuzzer not found (apt-get install clang libclang-rt-14-dev; tools/setup.sh)"
    exit 77
  fi
  local generator=() launcher=()
  command -v ninja > /dev/null && generator=(-G Ninja)
  command -v ccache > /dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  # -O1 -g1 as the sanitizer builds; no CUDA, no tests: only the libraries the harnesses read with.
  CC=clang CXX=clang++ cmake -S "$src" -B "$build" "${generator[@]}" "${launcher[@]}" -DIFT_SANITIZE=fuzz \
    -DIFT_CUDA=OFF -DIFT_BUILD_TESTS=OFF -DIFT_NATIVE=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1" > /dev/null
  cmake --build "$build" -j "${IFT_FUZZ_BUILD_JOBS:-$(nproc)}" --target "${harnesses[@]/#/fuzz_}"
}

do_run() {
  local h=$1 secs=$2
  local bin=$build/fuzz/fuzz_$h
  if [[ ! -x $bin ]]; then
    if ! have_libfuzzer; then
      echo "fuzz: skipped: clang++ with libFuzzer not found (apt-get install clang libclang-rt-14-dev)"
      exit 77
    fi
    echo "fuzz: $bin is missing: run tools/fuzz.sh build $build first" >&2
    exit 1
  fi
  local seeds=$src/tests/fuzz/$h new=$build/corpus/$h crashes=$build/crashes/$h
  mkdir -p "$new" "$crashes"
  # -malloc_limit_mb: a single allocation over 512 MiB is a finding (hostile sizes must be refused
  # before allocating); -timeout: an input that takes 10 s is a finding (a hang).
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
    "$bin" "$new" "$seeds" -max_total_time="$secs" -malloc_limit_mb=512 -rss_limit_mb=2048 -timeout=10 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$crashes/" \
    ${IFT_FUZZ_JOBS:+-jobs=$IFT_FUZZ_JOBS -workers=$IFT_FUZZ_JOBS} 2>&1 | tail -n 40
  local rc=${PIPESTATUS[0]}
  if ((rc != 0)); then
    echo "fuzz: $h found a problem; the input is in $crashes/ (reproduce: $bin INPUT)" >&2
    exit 1
  fi
}

case "$cmd" in
  build) do_build ;;
  run) do_run "$harness" "$seconds" ;;
  all)
    do_build
    for h in "${harnesses[@]}"; do do_run "$h" "$seconds"; done
    ;;
esac
