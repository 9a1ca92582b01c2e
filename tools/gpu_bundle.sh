#!/usr/bin/env bash
# Packs what tools/gpu_check.sh needs from a build tree into BUILD_DIR/carry, a small build tree of
# its own to carry to a GPU machine (docs/gpu.md). Builds nothing.
#
#   tools/gpu_bundle.sh BUILD_DIR [--verify]
#
# carry/tools/ift, carry/tests/engine/test_engine, carry/tests/kernels/test_kernels_gpu (when built):
#     copies of the binaries, host debug information stripped (the symbols stay, for backtraces; the
#     device code keeps its -lineinfo, which compute-sanitizer reads).
# carry/lib: every shared library they load except those any machine that runs CUDA has:
#     glibc (libc, libm, libpthread, libdl, librt, the loader), the compiler's runtime (libstdc++,
#     libgcc_s), and CUDA's own (libcuda, the driver's, must match the machine's kernel module;
#     libcudart and libcublas/libcublasLt come with the GPU machine's toolkit, which must be the
#     major version built against, and libcublasLt alone is hundreds of MiB; libcudnn, linked for
#     `attention: cudnn`, whose engines are about 1 GiB: tools/gpu_check.sh finds the GPU machine's,
#     PyTorch's nvidia-cudnn wheel where the system has none). What remains are
#     Debian's packages: OpenBLAS and its Fortran runtime, libgomp, yaml-cpp, sentencepiece, Boost
#     context, PCRE2.
# Prints each file and the total with the source tree that travels with it (git's tracked and
# untracked files), and fails when that is over 64 MiB, the most a GPU session carries.
# --verify (as root): starts the carried binaries in a chroot that holds only the bundle, glibc,
# libstdc++, libgcc_s and CUDA's runtime and BLAS libraries (and cuDNN's loader, libcudnn.so.9, where
# the binaries link it), as a machine without Debian's packages would: `ift --help` and test_engine's
# GEMM and emu golden cases must run.
set -euo pipefail

verify=0
[[ ${2:-} == --verify ]] && verify=1
if (($# < 1 || $# > 2)) || [[ ! -d $1 ]] || { (($# == 2)) && ((!verify)); }; then
  echo "usage: tools/gpu_bundle.sh BUILD_DIR [--verify]" >&2
  exit 2
fi
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
carry=$build/carry
limit=$((64 * 1024 * 1024))

binaries=(tools/ift tests/engine/test_engine)
[[ -x $build/tests/kernels/test_kernels_gpu ]] && binaries+=(tests/kernels/test_kernels_gpu)
for b in "${binaries[@]}"; do
  [[ -x $build/$b ]] || { echo "gpu_bundle: $build/$b is not built (docs/gpu.md has the build recipe)" >&2; exit 1; }
done

# Not carried: present wherever a CUDA binary can run (see above).
system='^(linux-vdso|ld-linux|libc|libm|libdl|libpthread|librt|libresolv|libutil|libstdc\+\+|libgcc_s|libcuda|libcudart|libcublas|libcublasLt|libnvrtc|libnvJitLink|libcudnn[a-z_]*)\.so'

rm -rf "$carry"
mkdir -p "$carry/lib"
for b in "${binaries[@]}"; do
  mkdir -p "$carry/$(dirname "$b")"
  cp "$build/$b" "$carry/$b"
  strip --strip-debug "$carry/$b"
done

declare -A seen=()
for b in "${binaries[@]}"; do
  while read -r name path; do
    [[ $name =~ $system ]] && continue
    [[ -n ${seen[$name]:-} ]] && continue
    [[ -f $path ]] || { echo "gpu_bundle: $b needs $name, which does not resolve here" >&2; exit 1; }
    seen[$name]=1
    cp -L "$path" "$carry/lib/$name"
  done < <(ldd "$carry/$b" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
done

echo "gpu_bundle: $carry"
(cd "$carry" && find . -type f -printf '%s %p\n' | sort -k2 | awk '{printf "  %8.1f MiB  %s\n", $1 / 1048576, $2}')
bundle_bytes=$(du -sb "$carry" | cut -f1)
tree_bytes=0
if git -C "$src" rev-parse --is-inside-work-tree > /dev/null 2>&1; then
  tree_bytes=$(cd "$src" && git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2> /dev/null |
    tail -n1 | cut -f1)
fi
total=$((bundle_bytes + tree_bytes))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "bundle $(mib "$bundle_bytes") + source tree $(mib "$tree_bytes") = $(mib "$total") (limit $(mib $limit))"
if ((total > limit)); then
  echo "gpu_bundle: over the limit a GPU session carries" >&2
  exit 1
fi

((verify)) || exit 0

# ---- --verify: the bundle alone, in a chroot ----------------------------------------------------------
if [[ $(id -u) != 0 ]] || ! command -v chroot > /dev/null; then
  echo "gpu_bundle: --verify needs root and chroot" >&2
  exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/lib64" "$root/lib/x86_64-linux-gnu" "$root/cuda" "$root/tmp"
cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
for l in libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 libstdc++.so.6 libgcc_s.so.1; do
  cp -L "/lib/x86_64-linux-gnu/$l" "$root/lib/x86_64-linux-gnu/"
done
cuda_lib=$(dirname "$(ldd "$carry/tools/ift" | awk '$1 ~ /^libcudart/ {print $3; exit}')")
cudnn_lib=$(ldd "$carry/tools/ift" | awk '$1 ~ /^libcudnn\.so/ {print $3; exit}')
for l in "$cuda_lib"/libcudart.so.* "$cuda_lib"/libcublas.so.* "$cuda_lib"/libcublasLt.so.* ${cudnn_lib:+"$cudnn_lib"}; do
  [[ -f $l ]] || continue
  ln "$(readlink -f "$l")" "$root/cuda/$(basename "$l")" 2> /dev/null || cp -L "$l" "$root/cuda/"  # hundreds of MiB: link
done
cp -a "$carry" "$root/carry"
mkdir -p "$root/fixtures"
cp -a "$src/tests/fixtures/golden" "$root/fixtures/"
in_root() { env -i LD_LIBRARY_PATH=/carry/lib:/cuda IFT_FIXTURES_DIR=/fixtures "$(command -v chroot)" "$root" "$@"; }
in_root /carry/tools/ift --help > "$root/ift.log" 2>&1 || { cat "$root/ift.log" >&2; echo "gpu_bundle: ift does not start from the bundle" >&2; exit 1; }
in_root /carry/tests/engine/test_engine '[gemm],emu fp32 equals cpu on the golden models - recompute changes nothing' \
  > "$root/test.log" 2>&1 || { cat "$root/test.log" >&2; echo "gpu_bundle: test_engine fails from the bundle" >&2; exit 1; }
echo "verified: ift and test_engine run from the bundle with only glibc, libstdc++, libgcc_s and CUDA ($cuda_lib) beside it:"
echo "  $(tail -n2 "$root/test.log" | head -n1)"
