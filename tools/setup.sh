#!/usr/bin/env bash
# Installs the Debian 12 packages ift builds and runs with. Idempotent; run as root (or with sudo).
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-openmp-dev     # GEMM for the cpu backend (the OpenMP build: one thread pool)
  libdnnl2                   # oneDNN: the cpu backend's fp32 GEMM where present (engine/cpu/blas.h)
  libboost-context-dev       # fibers of the SIMT emulator
  nlohmann-json3-dev         # safetensors headers, configs, data readers
  libyaml-cpp-dev            # training configs, custom chat templates
  libsentencepiece-dev sentencepiece  # .model tokenizers
  libpcre2-dev               # byte-level BPE pre-tokenizer regex
  catch2                     # tests (v2)
  clang libclang-rt-14-dev   # the libFuzzer harnesses (tools/fuzz.sh, docs/testing.md)
  libopenmpi-dev openmpi-bin # data parallelism on cpu/emu (mpirun), NCCL's bootstrap; the ctest label mpi
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
echo "setup: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
