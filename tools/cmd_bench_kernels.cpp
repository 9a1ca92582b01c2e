// `ift bench kernels`: times the CUDA kernels of kernels/ (their ift::cuda build) on one GPU, at a
// GPT-2-124M-like shape, in bf16 and fp32, each next to a baseline: a device-to-device copy of the
// same traffic for the memory-bound ops, cublasGemmEx for the matmuls (which the engine runs
// through cuBLASLt), the SIMT kernels for bf16 attention (whose default is the tensor-core kernels,
// kernels/attention_tc.cu), measured at the model's shape and at GPT-2 (D 64) and Llama (D 128, GQA
// 32/8) shapes over 1k-8k positions, with cuDNN's fused attention (engine/cuda/cudnn_attention.h) as
// a second bf16 baseline where the build links cuDNN and cuDNN takes the shape (else the reason is
// printed). fp32 attention has no baseline (see kNoAttentionBaseline).
// Kernels that replaced older ones are timed beside them in the same run, as rows of their own
// (*_baseline: cross-entropy, the four norms). The fused linear cross-entropy (the classifier and
// loss over chunks of rows, as the engine runs it with loss.fused) is timed against the unfused
// path (the (N, V) logits), with the device memory each holds.
//
// Method: CUDA events around each repetition, --warmup untimed repetitions first, the median of
// --reps, and the L2 cache flushed before each repetition by a cudaMemsetAsync of twice its size,
// outside the events. Ceilings: memory bandwidth from the device's memory clock and bus width;
// dense matmul peaks from a table of known GPUs (kKnownGpus), "unknown" for any other GPU. Each
// op's byte or FLOP count is written where it is measured; docs/benchmarks.md has the rest.
//
// `--check` instead runs the kernels at sizes the SIMT emulator cannot (packed attention over 8192
// tokens at head dim 128 with 32/8 heads, cross-entropy over a 128256 vocabulary, the norms past the
// 48 KiB shared-memory line, AdamW over more than 2^31 values) and compares them with the CPU
// reference (engine/cpu/ops.h, in double) on sampled rows: one PASS/FAIL line per case with its
// largest error and the tolerance there, exit 1 on any failure. See "check mode" below.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "tools/cli.h"
#include "tools/commands.h"

#if IFT_HAVE_CUDA
#define IFT_KERNELS_CUDA 1  // the nvcc build of the kernels, ift::cuda (kernels/target.h)
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "engine/config.h"
#include "engine/cpu/ops.h"
#include "engine/backend.h"
#include "engine/cuda/check.h"
#include "engine/cuda/cudnn_attention.h"
#include "engine/transformer.h"
#include "kernels/kernels.h"
#endif

namespace ift::cmd {

namespace {

cli::Parser parser() {
  cli::Parser p("ift bench kernels", "Time the CUDA kernels on this machine's GPU against cuBLAS and copy baselines.");
  p.option("--batch", "B", "8", "rows (samples of --seq-len tokens)");
  p.option("--seq-len", "T", "1024", "tokens per row");
  p.option("--channels", "C", "768", "model width");
  p.option("--heads", "H", "12", "attention heads (head dim C/H)");
  p.option("--vocab", "V", "50257", "vocabulary (cross-entropy, classifier matmul, embedding)");
  p.option("--params", "P", "124439808", "parameters AdamW updates (GPT-2 124M)");
  p.option("--dtype", "TYPE", "both", "storage type: bf16, fp32 or both");
  p.option("--warmup", "N", "3", "untimed repetitions before timing");
  p.option("--reps", "N", "20", "timed repetitions (the median is reported)");
  p.option("--filter", "TEXT", "", "only the kernels whose name contains TEXT");
  p.flag("--json", "print one JSON document instead of the table");
  p.flag("--check", "compare the kernels with the CPU reference at sizes the emulator cannot run (no timing)");
  return p;
}

}  // namespace

#if !IFT_HAVE_CUDA

int bench_kernels(Args args) {
  cli::Parser p = parser();
  if (!p.parse(args)) return 0;
  if (p.on("--check")) {
    std::fprintf(stderr, "ift bench kernels --check: this build has no CUDA, so there are no GPU kernels to check "
                         "(configure with -DIFT_CUDA=ON where nvcc exists; the emulated kernels are checked by ctest)\n");
    return 1;
  }
  std::printf("ift bench kernels: this build has no CUDA (configure with -DIFT_CUDA=ON where nvcc exists)\n");
  return 0;
}

#else

namespace {

// Dense (no sparsity) peaks from the vendors' datasheets: bf16 on tensor cores with fp32
// accumulation, and plain fp32 (no TF32), in TFLOP/s. A name matches as a whole word of the device
// name; the first match wins, so the longer names come first.
struct KnownGpu {
  const char* name;
  double bf16, fp32;
};
constexpr KnownGpu kKnownGpus[] = {
    {"H100 PCIe", 756, 51.2}, {"H100 NVL", 835, 60}, {"H100", 989, 67},     {"H200 NVL", 835, 60},
    {"H200", 989, 67},        {"A100", 312, 19.5},   {"A10", 125, 31.2},    {"L40S", 362, 91.6},
    {"L4", 121, 30.3},        {"RTX 4090", 165.2, 82.6}, {"RTX 3090", 71, 35.6},
};

const KnownGpu* known_gpu(const std::string& device) {
  const auto boundary = [&](size_t i) { return i >= device.size() || !std::isalnum((unsigned char)device[i]); };
  for (const KnownGpu& g : kKnownGpus)
    for (size_t at = device.find(g.name); at != std::string::npos; at = device.find(g.name, at + 1))
      if ((at == 0 || boundary(at - 1)) && boundary(at + std::strlen(g.name))) return &g;
  return nullptr;
}

// Why fp32 attention has no baseline (printed, and the JSON's "baseline_missing"); bf16 attention is
// compared with the SIMT kernels and with cuDNN's fused attention.
constexpr const char* kNoAttentionBaseline =
    "the SIMT kernels are ift's fp32 attention, and cuDNN's fused attention takes bf16 only";

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t x : d) {
    if (!s.empty()) s += 'x';
    s += std::to_string(x);
  }
  return s;
}

// Device buffers of one measurement, freed together.
class Buffers {
 public:
  Buffers() = default;
  Buffers(const Buffers&) = delete;
  Buffers& operator=(const Buffers&) = delete;
  ~Buffers() {
    for (void* p : ptrs_) cudaFree(p);
  }
  template <class T>
  T* alloc(size_t n) {
    void* p = nullptr;
    IFT_CUDA_CHECK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    ptrs_.push_back(p);
    return static_cast<T*>(p);
  }
  template <class T>
  T* zeros(size_t n) {
    T* p = alloc<T>(n);
    IFT_CUDA_CHECK(cudaMemset(p, 0, n * sizeof(T)));
    return p;
  }
  // Uniform in [-1, 1) from a fixed seed: one block of 2^20 values tiled over the buffer (timings do
  // not depend on the values, and drawing gigabytes on the host would outlast the benchmark).
  template <class T>
  T* random(size_t n) {
    T* p = alloc<T>(n);
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<T> block(std::min<size_t>(n, size_t(1) << 20));
    for (T& x : block) x = T(u(rng));
    for (size_t at = 0; at < n; at += block.size())
      IFT_CUDA_CHECK(cudaMemcpy(p + at, block.data(), std::min(block.size(), n - at) * sizeof(T), cudaMemcpyHostToDevice));
    return p;
  }
  template <class T>
  T* upload(const std::vector<T>& v) {
    T* p = alloc<T>(v.size());
    IFT_CUDA_CHECK(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return p;
  }

 private:
  std::vector<void*> ptrs_;
};

struct Result {
  std::string kernel, dtype, shape;
  double work = 0;             // bytes the op must move at least, or FLOPs it must do
  bool flops = false;          // work counts FLOPs (TFLOP/s), not bytes (GB/s)
  std::string baseline;        // what it is compared with; empty: none
  double ms = 0, baseline_ms = 0;
  bool cudnn = false;          // bf16 attention: cuDNN's fused attention as the second baseline
  double cudnn_ms = 0;         // its time, or 0 and
  std::string cudnn_missing = {};  // why it was not measured
  double device_bytes = 0;     // device memory the measurement held (the fused cross-entropy rows); 0: not measured
  double logits_bytes = 0;     // of which the logits buffer
};

// What every measurement shares: the stream, the timing loop, the cuBLAS handles.
class Bench {
 public:
  Bench(int warmup, int reps, size_t l2_bytes, std::string filter)
      : warmup_(warmup), reps_(reps), filter_(std::move(filter)), starts_(reps), stops_(reps) {
    IFT_CUDA_CHECK(cudaStreamCreate(&stream));
    for (int i = 0; i < reps; ++i) {
      IFT_CUDA_CHECK(cudaEventCreate(&starts_[i]));
      IFT_CUDA_CHECK(cudaEventCreate(&stops_[i]));
    }
    flush_bytes_ = 2 * std::max<size_t>(l2_bytes, 1 << 20);
    flush_ = buffers_.alloc<char>(flush_bytes_);
    lt_workspace = buffers_.alloc<char>(lt_workspace_bytes);
    IFT_CUBLAS_CHECK(cublasCreate(&blas));
    IFT_CUBLAS_CHECK(cublasSetStream(blas, stream));
    IFT_CUBLAS_CHECK(cublasLtCreate(&lt));
  }
  ~Bench() {
    cublasLtDestroy(lt);
    cublasDestroy(blas);
    for (int i = 0; i < reps_; ++i) cudaEventDestroy(starts_[i]), cudaEventDestroy(stops_[i]);
    cudaStreamDestroy(stream);
  }
  bool wanted(const std::string& kernel) const { return kernel.find(filter_) != std::string::npos; }
  size_t flush_bytes() const { return flush_bytes_; }

  // Median milliseconds of run() over the timed repetitions.
  double median_ms(const std::function<void()>& run) {
    for (int i = 0; i < warmup_; ++i) run();
    for (int i = 0; i < reps_; ++i) {
      // Evicts the op's data from the L2; before the start event, so not timed.
      IFT_CUDA_CHECK(cudaMemsetAsync(flush_, i & 0xff, flush_bytes_, stream));
      IFT_CUDA_CHECK(cudaEventRecord(starts_[i], stream));
      run();
      IFT_CUDA_CHECK(cudaEventRecord(stops_[i], stream));
    }
    IFT_CUDA_CHECK(cudaStreamSynchronize(stream));
    std::vector<float> ms(reps_);
    for (int i = 0; i < reps_; ++i) IFT_CUDA_CHECK(cudaEventElapsedTime(&ms[i], starts_[i], stops_[i]));
    std::sort(ms.begin(), ms.end());
    return ms[reps_ / 2];
  }

  // Times run() and, when given, baseline(); appends the result.
  void measure(Result r, const std::function<void()>& run, const std::function<void()>& baseline = {}) {
    r.ms = median_ms(run);
    if (baseline) r.baseline_ms = median_ms(baseline);
    results.push_back(std::move(r));
  }

  // Times cuDNN's fused attention (run) as the second baseline of the last result, or records why it
  // cannot: no cuDNN in this build, or cuDNN refusing the shape or failing (the error's message).
  void measure_cudnn(const std::function<void(CudnnAttention&)>& run) {
    Result& r = results.back();
    r.cudnn = true;
    try {
      if (!cudnn_) cudnn_ = std::make_unique<CudnnAttention>(stream);
      r.cudnn_ms = median_ms([&] { run(*cudnn_); });
    } catch (const Error& e) {
      r.cudnn_missing = e.what();
    }
  }

  // A memory-bound op that must move `bytes`; its baseline copies bytes/2 device to device, which
  // moves the same bytes (each is read once and written once): the bandwidth the op could reach.
  void memory_bound(const char* kernel, const char* dtype, std::string shape, double bytes,
                    const std::function<void()>& run) {
    if (!wanted(kernel)) return;
    Buffers copy;
    const size_t half = static_cast<size_t>(bytes / 2);
    char *src = copy.alloc<char>(half), *dst = copy.alloc<char>(half);
    measure({kernel, dtype, std::move(shape), bytes, false, "memcpy"}, run, [&] {
      IFT_CUDA_CHECK(cudaMemcpyAsync(dst, src, half, cudaMemcpyDeviceToDevice, stream));
    });
  }

  cudaStream_t stream = nullptr;
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* lt_workspace = nullptr;
  size_t lt_workspace_bytes = size_t(32) << 20;
  std::vector<Result> results;

 private:
  int warmup_, reps_;
  std::string filter_;
  std::vector<cudaEvent_t> starts_, stops_;
  Buffers buffers_;
  char* flush_ = nullptr;
  size_t flush_bytes_ = 0;
  std::unique_ptr<CudnnAttention> cudnn_;  // created on first use, on the stream
};

struct Shape {
  int B, T, C, H, V;
  int64_t params;
};

// out (N, O) = inp (N, K) W^T, W (O, K), all row-major (the engine's layout, as PyTorch's Linear).
// In cuBLAS's column-major terms: out^T (O, N) = op_T(W as a (K, O) matrix) inp^T (K, N).
// FLOPs = 2 N O K. The timed path is cuBLASLt, the engine's GEMM on GPUs (design.md), with fp32
// accumulation, the heuristic's first algorithm and a 32 MiB workspace; the baseline is plain
// cublasGemmEx with cuBLAS's default algorithm choice.
template <class T>
void bench_matmul(Bench& b, const char* name, const char* dtype, int N, int O, int K) {
  if (!b.wanted(name)) return;
  constexpr cudaDataType_t type = std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_16BF;
  Buffers m;
  const T* inp = m.random<T>(size_t(N) * K);
  const T* w = m.random<T>(size_t(O) * K);
  T* out = m.alloc<T>(size_t(N) * O);
  const float alpha = 1, beta = 0;
  const cublasOperation_t transpose = CUBLAS_OP_T;
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t lw = nullptr, lx = nullptr, ly = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  IFT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  IFT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose));
  IFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lw, type, K, O, K));
  IFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&lx, type, K, N, K));
  IFT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&ly, type, O, N, O));
  IFT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  IFT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                     &b.lt_workspace_bytes, sizeof b.lt_workspace_bytes));
  cublasLtMatmulHeuristicResult_t algo{};
  int found = 0;
  IFT_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(b.lt, desc, lw, lx, ly, ly, pref, 1, &algo, &found));
  IFT_CHECK(found == 1, "cuBLASLt has no algorithm for ", name, " (N, O, K) = (", N, ", ", O, ", ", K, ")");
  b.measure(
      {name, dtype, dims({N, O, K}), 2.0 * N * O * K, true, "cublasGemmEx"},
      [&] {
        IFT_CUBLAS_CHECK(cublasLtMatmul(b.lt, desc, &alpha, w, lw, inp, lx, &beta, out, ly, out, ly, &algo.algo,
                                     b.lt_workspace, b.lt_workspace_bytes, b.stream));
      },
      [&] {
        IFT_CUBLAS_CHECK(cublasGemmEx(b.blas, CUBLAS_OP_T, CUBLAS_OP_N, O, N, K, &alpha, w, type, K, inp, type, K, &beta,
                                   out, type, O, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      });
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(ly), cublasLtMatrixLayoutDestroy(lx), cublasLtMatrixLayoutDestroy(lw);
  cublasLtMatmulDescDestroy(desc);
}

// bf16 attention at args p (buffers allocated by the caller): the dispatch (tensor cores where they
// take the shape) against the SIMT kernels. `fwd` is FlashAttention's forward FLOP count (4 S^2 H D,
// halved for causal, per sample); the backward counts 2.5 times it.
void bench_attention_bf16(Bench& b, const AttentionArgs& p, const __nv_bfloat16* qkv, __nv_bfloat16* out, float* lse,
                          const __nv_bfloat16* dout, __nv_bfloat16* dqkv, float* delta, const std::string& shape, double fwd) {
  cudaStream_t st = b.stream;
  const std::string kind = attention_tc_supports(p, qkv, out, dqkv) ? "tensor cores" : "simt";
  if (b.wanted("attention_forward")) {
    b.measure({"attention_forward", "bf16", shape + " " + kind, fwd, true, "simt"},
              [&] { attention_forward(out, lse, qkv, p, st); }, [&] { attention_forward_simt(out, lse, qkv, p, st); });
    b.measure_cudnn([&](CudnnAttention& c) { c.forward(out, lse, qkv, p); });
  }
  attention_forward(out, lse, qkv, p, st);  // the backward's out and lse
  if (b.wanted("attention_backward")) {
    b.measure({"attention_backward", "bf16", shape + " " + kind, 2.5 * fwd, true, "simt"},
              [&] { attention_backward(dqkv, delta, dout, qkv, out, lse, p, st); },
              [&] { attention_backward_simt(dqkv, delta, dout, qkv, out, lse, p, st); });
    b.measure_cudnn([&](CudnnAttention& c) { c.backward(dqkv, dout, qkv, out, lse, p); });
  }
}

// GPT-2 (H 12, D 64) and Llama (H 32, KVH 8, D 128) attention over 8192 tokens in samples of 1k-8k
// positions, bf16, causal.
void bench_attention_shapes(Bench& b) {
  if (!b.wanted("attention_forward") && !b.wanted("attention_backward")) return;
  struct Heads {
    int H, KVH, D;
  };
  for (const Heads hd : {Heads{12, 12, 64}, Heads{32, 8, 128}}) {
    for (const int T : {1024, 2048, 4096, 8192}) {
      const int B = 8192 / T, N = B * T;
      Buffers m;
      std::vector<int32_t> cu;
      for (int i = 0; i <= B; ++i) cu.push_back(i * T);
      AttentionArgs p;
      p.N = N, p.H = hd.H, p.KVH = hd.KVH, p.D = hd.D, p.ld = (hd.H + 2 * hd.KVH) * hd.D, p.S = B;
      p.scale = 1.0f / std::sqrt(float(hd.D));
      p.cu_seqlens = m.upload(cu), p.cu_seqlens_host = cu.data();
      using T16 = __nv_bfloat16;
      const size_t nout = size_t(N) * hd.H * hd.D;
      T16 *qkv = m.random<T16>(size_t(N) * p.ld), *dqkv = m.alloc<T16>(size_t(N) * p.ld), *out = m.alloc<T16>(nout);
      T16* dout = m.random<T16>(nout);
      float *lse = m.alloc<float>(size_t(N) * hd.H), *delta = m.alloc<float>(size_t(N) * hd.H);
      const double fwd = 4.0 * B * (double(T) * T / 2) * hd.H * hd.D;
      bench_attention_bf16(b, p, qkv, out, lse, dout, dqkv, delta, dims({B, T, hd.H, hd.KVH, hd.D}), fwd);
    }
  }
}

// row-major out (M, O) = a (M, K) . w^T, w (O, K): cuBLAS in column-major terms, fp32 accumulation.
template <class T, class Out>
void gemm_nt(Bench& b, Out* out, const T* a, const T* w, int M, int O, int K, float beta) {
  constexpr cudaDataType_t in = std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_16BF;
  constexpr cudaDataType_t ot = std::is_same_v<Out, float> ? CUDA_R_32F : CUDA_R_16BF;
  const float alpha = 1;
  IFT_CUBLAS_CHECK(cublasGemmEx(b.blas, CUBLAS_OP_T, CUBLAS_OP_N, O, M, K, &alpha, w, in, K, a, in, K, &beta, out, ot, O,
                                CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// The classifier and its loss over N rows, forward and backward, as the engine runs them: logits =
// x . W^T (N, Vp), the cross-entropy with its gradient in place, dx = dlogits . W, dW += dlogits^T . x
// (fp32). Unfused: one pass over the (N, Vp) logits. Fused (loss.fused): chunks of the rows
// (fused_ce_chunk_rows, the engine's rule) each through the same three GEMMs and the loss, with
// the classifier's forward GEMM run again in the backward as the engine does (the forward keeps no
// logits), so the logits buffer is (chunk, Vp). Every row is trained here (the case with the most
// work). The memory is what each path holds on the device, from cudaMemGetInfo around its
// allocations (inputs and gradients included).
template <class T>
void bench_fused_linear_cross_entropy(Bench& b, const char* dt, int N, int C, int V) {
  ModelConfig mc;
  mc.hidden = C, mc.vocab_size = V;
  ModelOptions fused_on;
  fused_on.fused_ce = true;
  const int Vp = mc.padded_vocab(), chunk = fused_ce_chunk_rows(mc, N, fused_on);
  std::vector<int32_t> targets(N);
  std::mt19937 rng(4321);
  for (int32_t& t : targets) t = int32_t(rng() % V);
  for (const bool fused : {true, false}) {
    size_t free_before = 0, free_after = 0, total = 0;
    IFT_CUDA_CHECK(cudaDeviceSynchronize());
    IFT_CUDA_CHECK(cudaMemGetInfo(&free_before, &total));
    Buffers m;
    const int rows = fused ? chunk : N;
    const T *x = m.random<T>(size_t(N) * C), *w = m.random<T>(size_t(Vp) * C);
    T *logits = m.alloc<T>(size_t(rows) * Vp), *dx = m.alloc<T>(size_t(N) * C);
    float *dw = m.zeros<float>(size_t(Vp) * C), *loss = m.alloc<float>(1);
    const int32_t* tgt = m.upload(targets);
    const size_t sb = cross_entropy_scratch_bytes(rows, V);
    void* scratch = m.alloc<char>(sb);
    IFT_CUDA_CHECK(cudaDeviceSynchronize());
    IFT_CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
    const double held = double(free_before) - double(free_after);
    const auto forward_rows = [&](int a, int n) {  // logits and the loss alone, as the engine's forward
      gemm_nt(b, logits, x + size_t(a) * C, w, n, Vp, C, 0.0f);
      cross_entropy_forward({n, V, Vp, double(N)}, loss, static_cast<T*>(nullptr), logits, tgt + a, scratch, sb, b.stream);
    };
    const auto backward_rows = [&](int a, int n, bool again) {  // again: the forward GEMM once more (fused)
      const T* xa = x + size_t(a) * C;
      if (again) gemm_nt(b, logits, xa, w, n, Vp, C, 0.0f);
      cross_entropy_forward({n, V, Vp, double(N)}, loss, logits, logits, tgt + a, scratch, sb, b.stream);
      const float one = 1, zero = 0;
      constexpr cudaDataType_t in = std::is_same_v<T, float> ? CUDA_R_32F : CUDA_R_16BF;
      // dx (n, C) = dlogits (n, Vp) . W (Vp, C): column-major dx^T = W^T . dlogits^T
      IFT_CUBLAS_CHECK(cublasGemmEx(b.blas, CUBLAS_OP_N, CUBLAS_OP_N, C, n, Vp, &one, w, in, C, logits, in, Vp, &zero,
                                    dx + size_t(a) * C, in, C, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
      // dW (Vp, C) += dlogits^T (Vp, n) . x (n, C): column-major dW^T = x^T . dlogits
      IFT_CUBLAS_CHECK(cublasGemmEx(b.blas, CUBLAS_OP_N, CUBLAS_OP_T, C, Vp, n, &one, xa, in, C, logits, in, Vp, &one, dw,
                                    CUDA_R_32F, C, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    };
    // The work counted is the unfused path's three GEMMs (6 N Vp C) for both rows, so that their
    // TFLOP/s compare the time of the same result; the fused path's fourth GEMM is its cost.
    Result r{fused ? "fused_linear_cross_entropy" : "linear_cross_entropy_unfused", dt,
             dims({N, C, V}) + (fused ? " chunk " + std::to_string(chunk) : ""), 3 * 2.0 * N * double(Vp) * C, true, ""};
    r.ms = b.median_ms([&] {
      for (int a = 0; a < N; a += rows) forward_rows(a, std::min(rows, N - a));
      for (int a = 0; a < N; a += rows) backward_rows(a, std::min(rows, N - a), fused);
    });
    r.device_bytes = held;
    r.logits_bytes = double(rows) * Vp * sizeof(T);
    b.results.push_back(r);
  }
}

// Every op at shape s, storage type T. In the byte counts, e is the bytes of one stored value.
template <class T>
void bench_dtype(Bench& b, const Shape& s) {
  constexpr bool bf16 = std::is_same_v<T, __nv_bfloat16>;
  const char* dt = bf16 ? "bf16" : "fp32";
  const double e = sizeof(T);
  const int N = s.B * s.T, C = s.C, H = s.H, D = C / H, F = 4 * C, V = s.V;
  const size_t NC = size_t(N) * C, NF = size_t(N) * F;
  cudaStream_t st = b.stream;
  {
    Buffers m;
    T *x = m.random<T>(NC), *w = m.random<T>(C), *bias = m.random<T>(C), *y = m.alloc<T>(NC), *dx = m.alloc<T>(NC);
    float *mean = m.alloc<float>(N), *rstd = m.alloc<float>(N), *dw = m.zeros<float>(C), *db = m.zeros<float>(C);
    const size_t sf = layernorm_backward_scratch_floats(N, C);
    float* scratch = m.alloc<float>(sf);
    T *r = m.random<T>(NC), *res = m.alloc<T>(NC);
    // Each norm beside the kernel it replaced (*_baseline: a block per row re-reading it, shared-
    // memory column sums), both against the copy.
    for (const bool base : {false, true}) {
      const std::string suffix = base ? "_baseline" : "";
      // read x, weight, bias; write out, mean, rstd (fp32)
      b.memory_bound(("layernorm_forward" + suffix).c_str(), dt, dims({N, C}), 2 * e * NC + 2 * e * C + 8.0 * N, [&] {
        if (base) layernorm_forward_baseline(y, mean, rstd, x, w, bias, NormArgs{N, C, 1e-5f}, st);
        else layernorm_forward(y, mean, rstd, x, w, bias, NormArgs{N, C, 1e-5f}, st);
      });
      // read dout, x, weight, mean, rstd; write dx; read and write dweight, dbias (fp32). The
      // per-block partial sums in scratch are the kernel's choice, not counted.
      b.memory_bound(("layernorm_backward" + suffix).c_str(), dt, dims({N, C}), 3 * e * NC + e * C + 8.0 * N + 16.0 * C, [&] {
        if (base) layernorm_backward_baseline(dx, dw, db, nullptr, y, x, w, mean, rstd, NormArgs{N, C}, scratch, sf, st);
        else layernorm_backward(dx, dw, db, nullptr, y, x, w, mean, rstd, NormArgs{N, C}, scratch, sf, st);
      });
      // read x, weight; write out, rstd
      b.memory_bound(("rmsnorm_forward" + suffix).c_str(), dt, dims({N, C}), 2 * e * NC + e * C + 4.0 * N, [&] {
        if (base) rmsnorm_forward_baseline(y, rstd, x, w, NormArgs{N, C, 1e-5f}, st);
        else rmsnorm_forward(y, rstd, x, w, NormArgs{N, C, 1e-5f}, st);
      });
      // read dout, x, weight, rstd; write dx; read and write dweight (fp32)
      b.memory_bound(("rmsnorm_backward" + suffix).c_str(), dt, dims({N, C}), 3 * e * NC + e * C + 4.0 * N + 8.0 * C, [&] {
        if (base) rmsnorm_backward_baseline(dx, dw, nullptr, y, x, w, rstd, NormArgs{N, C}, scratch, sf, st);
        else rmsnorm_backward(dx, dw, nullptr, y, x, w, rstd, NormArgs{N, C}, scratch, sf, st);
      });
    }
    // the fused residual add: read x, residual, weight; write residual_out, out, rstd (and mean)
    b.memory_bound("layernorm_residual_forward", dt, dims({N, C}), 4 * e * NC + 2 * e * C + 8.0 * N,
                   [&] { layernorm_residual_forward(res, y, mean, rstd, x, r, w, bias, NormArgs{N, C, 1e-5f}, st); });
    b.memory_bound("rmsnorm_residual_forward", dt, dims({N, C}), 4 * e * NC + e * C + 4.0 * N,
                   [&] { rmsnorm_residual_forward(res, y, rstd, x, r, w, NormArgs{N, C, 1e-5f}, st); });
  }
  {
    Buffers m;
    T *a = m.random<T>(NF), *g = m.random<T>(NF), *y = m.alloc<T>(NF), *gate_up = m.random<T>(2 * NF);
    // read inp; write out
    b.memory_bound("gelu_forward", dt, dims({N, F}), 2 * e * NF, [&] { gelu_forward(y, a, NF, st); });
    // read inp, dout; write dinp
    b.memory_bound("gelu_backward", dt, dims({N, F}), 3 * e * NF, [&] { gelu_backward(y, a, g, NF, st); });
    // read gate and up (N, 2F); write out (N, F)
    b.memory_bound("swiglu_forward", dt, dims({N, 2 * F}), 3 * e * NF, [&] { glu_forward(y, gate_up, GluArgs{N, F}, st); });
    // read a, b; write out
    b.memory_bound("residual_forward", dt, dims({N, C}), 3 * e * NC, [&] { residual_forward(y, a, g, NC, st); });
    std::vector<int32_t> tokens(N), positions(N);
    std::mt19937 rng(1234);
    for (int i = 0; i < N; ++i) tokens[i] = int32_t(rng() % V), positions[i] = i % s.T;
    const int32_t *tok = m.upload(tokens), *pos = m.upload(positions);
    T *wte = m.random<T>(size_t(V) * C), *wpe = m.random<T>(size_t(s.T) * C);
    // read tokens, positions, the N gathered rows of wte and of wpe; write out
    b.memory_bound("embedding_forward", dt, dims({N, C}), 3 * e * NC + 8.0 * N,
                   [&] { embedding_forward(y, tok, pos, wte, wpe, EmbeddingArgs{N, C, V, s.T}, st); });
    // The rows grouped by id on the host once (the backend does it every step, before the launch:
    // a download and an upload of a few N ints, not timed here), then the kernel: read dout and the
    // groups; read and write the dwte and dwpe rows of the ids present (at most N of each, fp32).
    {
      const EmbeddingArgs ea{N, C, V, s.T};
      std::vector<int32_t> groups(embedding_buckets_ints(N));
      embedding_buckets(groups.data(), tokens.data(), positions.data(), ea);
      const int32_t* g = m.upload(groups);
      float *dwte = m.zeros<float>(size_t(V) * C), *dwpe = m.zeros<float>(size_t(s.T) * C);
      const double rows = double(std::min(groups[0], N)) + double(std::min(groups[1], N));
      b.memory_bound("embedding_backward", dt, dims({N, C}), e * NC + 8.0 * C * rows + 4.0 * double(groups.size()),
                     [&] { embedding_backward(dwte, dwpe, y, g, ea, st); });
    }
    // RoPE over the q and k heads of a qkv row (H + H heads of D, row stride 3C), the cos/sin table
    // of T positions: read and write 2 N C values, read the table rows (N D floats at most).
    {
      RopeArgs ra;
      ra.N = N, ra.heads = 2 * H, ra.D = D, ra.ld = 3 * C, ra.P = s.T, ra.theta = 10000.0f;
      std::vector<float> table(size_t(s.T) * D);
      cpu::rope_table(table.data(), ra);
      const float* tab = m.upload(table);
      T* qkv = m.random<T>(size_t(N) * 3 * C);
      const double bytes = 2 * e * 2.0 * NC + 4.0 * N + 4.0 * double(std::min(N, s.T)) * D;
      b.memory_bound("rope_forward", dt, dims({N, 2 * H, D}), bytes, [&] { rope_forward(qkv, pos, tab, ra, st); });
      b.memory_bound("rope_backward", dt, dims({N, 2 * H, D}), bytes, [&] { rope_backward(qkv, pos, tab, ra, st); });
    }
  }
  if (b.wanted("attention_forward") || b.wanted("attention_backward")) {
    Buffers m;
    std::vector<int32_t> cu;
    for (int i = 0; i <= s.B; ++i) cu.push_back(i * s.T);
    AttentionArgs p;
    p.N = N, p.H = H, p.KVH = H, p.D = D, p.ld = 3 * C, p.S = s.B, p.scale = 1.0f / std::sqrt(float(D));
    p.cu_seqlens = m.upload(cu), p.cu_seqlens_host = cu.data();
    T *qkv = m.random<T>(size_t(N) * p.ld), *dqkv = m.alloc<T>(size_t(N) * p.ld), *out = m.alloc<T>(NC);
    T* dout = m.random<T>(NC);
    float *lse = m.alloc<float>(size_t(N) * H), *delta = m.alloc<float>(size_t(N) * H);
    // FlashAttention's count: QK^T and PV, 2 FLOPs per multiply-add, causal (half of each T x T);
    // the backward's five matmuls count 2.5 times the forward's two.
    const double fwd = 4.0 * s.B * (double(s.T) * s.T / 2) * H * D;
    const std::string shape = dims({s.B, s.T, H, D});
    if constexpr (bf16) {
      bench_attention_bf16(b, p, qkv, out, lse, dout, dqkv, delta, shape, fwd);
    } else {
      if (b.wanted("attention_forward"))
        b.measure({"attention_forward", dt, shape, fwd, true, ""}, [&] { attention_forward(out, lse, qkv, p, st); });
      attention_forward(out, lse, qkv, p, st);  // the backward's out and lse
      if (b.wanted("attention_backward"))
        b.measure({"attention_backward", dt, shape, 2.5 * fwd, true, ""},
                  [&] { attention_backward(dqkv, delta, dout, qkv, out, lse, p, st); });
    }
  }
  if constexpr (bf16) bench_attention_shapes(b);
  if (b.wanted("cross_entropy_forward") || b.wanted("cross_entropy_baseline")) {
    Buffers m;
    std::vector<int32_t> targets(N);
    std::mt19937 rng(1234);
    for (int32_t& t : targets) t = int32_t(rng() % V);
    const int32_t* tgt = m.upload(targets);
    const int ld = (V + 127) / 128 * 128;  // the model's padded classifier rows
    T* logits = m.random<T>(size_t(N) * ld);
    float* loss = m.alloc<float>(1);
    const size_t sb = cross_entropy_baseline_scratch_bytes(N, V);  // the larger of the two
    void* scratch = m.alloc<char>(sb);
    // read logits, targets; write dlogits (over the logits, as the trainer does) and the loss
    const double bytes = 2 * e * double(N) * V + 4.0 * N + 4;
    if (b.wanted("cross_entropy_forward"))
      b.memory_bound("cross_entropy_forward", dt, dims({N, V}), bytes, [&] {
        cross_entropy_forward({N, V, ld, float(N)}, loss, logits, logits, tgt, scratch, sb, st);
      });
    // the kernel it replaced: (row, chunk) blocks, three launches, scalar loads
    if (b.wanted("cross_entropy_baseline"))
      b.memory_bound("cross_entropy_baseline", dt, dims({N, V}), bytes, [&] {
        cross_entropy_forward_baseline({N, V, ld, float(N)}, loss, logits, logits, tgt, scratch, sb, st);
      });
  }
  if (b.wanted("fused_linear_cross_entropy")) bench_fused_linear_cross_entropy<T>(b, dt, N, C, V);
  {
    Buffers m;
    const int64_t n = s.params;
    AdamWArgs u;
    float *master = m.random<float>(n), *mom1 = m.zeros<float>(n), *mom2 = m.zeros<float>(n);
    __nv_bfloat16* params_bf16 =
        bf16 ? m.alloc<__nv_bfloat16>(n) : nullptr;  // the bf16 working copy, when training in bf16
    u.n = n, u.lr = 1e-4f, u.weight_decay = 0.1f;
    const T* grads = m.random<T>(n);
    // read and write master, m, v (fp32); read grads; write the bf16 weights (bf16 only)
    b.memory_bound("adamw_update", dt, dims({n}), 24.0 * n + e * n + (bf16 ? 2.0 * n : 0.0),
                   [&] { adamw_update(u, master, mom1, mom2, params_bf16, grads, st); });
    const size_t sf = sum_of_squares_scratch_floats(n);
    float *sum = m.alloc<float>(1), *scratch = m.alloc<float>(sf);
    // read grads (the global gradient norm)
    b.memory_bound("sum_of_squares", dt, dims({n}), e * n, [&] { sum_of_squares(sum, grads, n, scratch, sf, st); });
  }
  bench_matmul<T>(b, "matmul_qkv", dt, N, 3 * C, C);
  bench_matmul<T>(b, "matmul_attn_proj", dt, N, C, C);
  bench_matmul<T>(b, "matmul_fc", dt, N, F, C);
  bench_matmul<T>(b, "matmul_fc_proj", dt, N, C, F);
  bench_matmul<T>(b, "matmul_lm_head", dt, N, V, C);
}

// ---- check mode ---------------------------------------------------------------------------------
// Every case draws its inputs from one fixed tile of kTile pseudo-random values (a prime length, so
// rows and heads see different values and no power-of-two stride aliases), repeated over the
// buffer: gigabytes of inputs cost one small upload each, and the reference rebuilds any element
// from the tile. The kernels run in fp32; the references in double on the same fp32 values. The
// tolerances are those of the emulator tests of each kernel (tests/kernels/test_*.cpp), restated
// at each case.

constexpr size_t kTile = 1048573;  // the largest prime below 2^20

// The tile: uniform in [lo, hi) from `seed`.
std::vector<float> make_tile(uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> t(kTile);
  for (float& x : t) x = u(rng);
  return t;
}

// n floats on the device: element i is tile[i % kTile].
float* tiled(Buffers& m, const std::vector<float>& tile, size_t n) {
  float* p = m.alloc<float>(n);
  for (size_t at = 0; at < n; at += tile.size())
    IFT_CUDA_CHECK(cudaMemcpy(p + at, tile.data(), std::min(tile.size(), n - at) * sizeof(float), cudaMemcpyHostToDevice));
  return p;
}

template <class T>
std::vector<T> download(const T* p, size_t n) {
  std::vector<T> v(n);
  IFT_CUDA_CHECK(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

// The comparison of one case: |got - ref| <= atol + rtol * |ref| element by element. Keeps the
// largest error and the element that used the largest share of its tolerance.
struct Check {
  std::string name, shape, rule;
  size_t compared = 0, failed = 0;
  double max_error = 0, worst_error = 0, worst_tolerance = 0, worst_share = 0;
  void add(double got, double ref, double atol, double rtol) {
    const double err = std::abs(got - ref), tol = atol + rtol * std::abs(ref);
    ++compared;
    if (!(err <= tol)) ++failed;  // NaN fails
    max_error = std::max(max_error, std::isnan(err) ? std::numeric_limits<double>::infinity() : err);
    const double share = std::isnan(err) ? std::numeric_limits<double>::infinity() : err / tol;
    if (share >= worst_share) worst_share = share, worst_error = err, worst_tolerance = tol;
  }
  bool passed() const { return compared > 0 && failed == 0; }
};

double max_abs_of(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// Attention at head dim 128, 32 query and 8 kv heads, 8192 tokens in 8 packed samples of different
// lengths (one of length 1). Forward: out of sampled rows of every sample (its first two, middle,
// last, and 4 random rows) against cpu::attention_cached over the sample's earlier rows. Backward:
// dq, dk, dv of every row of the samples up to 400 rows, and dq of the first 160 rows of the longer
// ones (a prefix of a causal sample is its own problem for dq, not for dk and dv), against
// cpu::attention_forward + backward of that sample. Rule (the emulator tests'): out, dq, dk, dv within
// 1e-5 * max(1, max|ref|) of each tensor; lse within 1e-5 + 1e-5 |ref|.
void check_attention(std::vector<Check>& checks) {
  const int H = 32, KVH = 8, D = 128, ld = (H + 2 * KVH) * D;
  const std::vector<int> lengths = {3000, 2048, 1500, 1024, 400, 119, 100, 1};
  std::vector<int32_t> cu = {0};
  for (int L : lengths) cu.push_back(cu.back() + L);
  const int N = cu.back(), S = static_cast<int>(lengths.size());
  const std::string shape = dims({N, H, KVH, D}) + " in " + std::to_string(S) + " samples";
  const std::vector<float> tile_qkv = make_tile(11, -2.0f, 2.0f), tile_dout = make_tile(12, -1.0f, 1.0f);
  const size_t nqkv = size_t(N) * ld, nout = size_t(N) * H * D;

  Buffers m;
  AttentionArgs p;
  p.N = N, p.H = H, p.KVH = KVH, p.D = D, p.ld = ld, p.S = S, p.scale = 1.0f / std::sqrt(float(D));
  p.cu_seqlens = m.upload(cu), p.cu_seqlens_host = cu.data();
  float *qkv = tiled(m, tile_qkv, nqkv), *dout = tiled(m, tile_dout, nout);
  float *out = m.alloc<float>(nout), *lse = m.alloc<float>(size_t(N) * H), *dqkv = m.alloc<float>(nqkv);
  float* delta = m.alloc<float>(size_t(N) * H);
  attention_forward(out, lse, qkv, p, nullptr);
  attention_backward(dqkv, delta, dout, qkv, out, lse, p, nullptr);
  IFT_CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<float> g_out = download(out, nout), g_lse = download(lse, size_t(N) * H), g_dqkv = download(dqkv, nqkv);
  const auto qkv_at = [&](size_t i) { return double(tile_qkv[i % kTile]); };
  const auto dout_at = [&](size_t i) { return double(tile_dout[i % kTile]); };

  // Forward, sampled rows.
  std::mt19937 rng(13);
  std::vector<double> got_out, ref_out;
  for (int s = 0; s < S; ++s) {
    const int s0 = cu[s], s1 = cu[s + 1];
    std::vector<int> rows = {s0, std::min(s0 + 1, s1 - 1), (s0 + s1) / 2, s1 - 1};
    for (int k = 0; k < 4; ++k) rows.push_back(s0 + int(rng() % unsigned(s1 - s0)));
    for (int i : rows) {
      const int n = i - s0 + 1;
      std::vector<double> q(size_t(H) * D), kc(size_t(n) * KVH * D), vc(size_t(n) * KVH * D), o(size_t(H) * D);
      for (int c = 0; c < H * D; ++c) q[c] = qkv_at(size_t(i) * ld + c);
      for (int r = 0; r < n; ++r)
        for (int c = 0; c < KVH * D; ++c) {
          kc[size_t(r) * KVH * D + c] = qkv_at(size_t(s0 + r) * ld + H * D + c);
          vc[size_t(r) * KVH * D + c] = qkv_at(size_t(s0 + r) * ld + (H + KVH) * D + c);
        }
      DecodeAttentionArgs dec;
      dec.n = 1, dec.start = n - 1, dec.H = H, dec.KVH = KVH, dec.D = D, dec.ldq = H * D, dec.scale = p.scale;
      cpu::attention_cached(o.data(), q.data(), kc.data(), vc.data(), dec);
      for (int c = 0; c < H * D; ++c) got_out.push_back(g_out[size_t(i) * H * D + c]), ref_out.push_back(o[c]);
    }
  }
  Check fwd{"attention_forward fp32 out (sampled rows)", shape, "|err| <= 1e-5 max(1, max|ref|)"};
  const double out_tol = 1e-5 * std::max(1.0, max_abs_of(ref_out));
  for (size_t k = 0; k < ref_out.size(); ++k) fwd.add(got_out[k], ref_out[k], out_tol, 0.0);
  checks.push_back(fwd);

  // Backward, per sample (whole, or a prefix for dq).
  Check lse_check{"attention_forward fp32 lse (backward's rows)", shape, "|err| <= 1e-5 + 1e-5 |ref|"};
  std::vector<double> got_g[3], ref_g[3];  // dq, dk, dv
  for (int s = 0; s < S; ++s) {
    const int s0 = cu[s], L = lengths[s];
    const bool whole = L <= 400;
    const int rows = whole ? L : 160, cols = whole ? (H + 2 * KVH) * D : H * D;
    std::vector<double> x(size_t(rows) * ld), dy(size_t(rows) * H * D), o(size_t(rows) * H * D), l(size_t(rows) * H);
    std::vector<double> g(size_t(rows) * ld, 0.0);
    for (size_t e = 0; e < x.size(); ++e) x[e] = qkv_at(size_t(s0) * ld + e);
    for (size_t e = 0; e < dy.size(); ++e) dy[e] = dout_at(size_t(s0) * H * D + e);
    const int32_t sub_cu[2] = {0, rows};
    AttentionArgs sh = p;
    sh.N = rows, sh.cu_seqlens = sub_cu, sh.cu_seqlens_host = sub_cu, sh.S = 1;
    const double *q = x.data(), *k = q + H * D, *v = q + (H + KVH) * D;
    cpu::attention_forward(o.data(), l.data(), q, k, v, sh);
    cpu::attention_backward(g.data(), g.data() + H * D, g.data() + (H + KVH) * D, dy.data(), q, k, v, o.data(), l.data(), sh);
    for (int r = 0; r < rows; ++r) {
      for (int h = 0; h < H; ++h) lse_check.add(g_lse[size_t(s0 + r) * H + h], l[size_t(r) * H + h], 1e-5, 1e-5);
      for (int c = 0; c < cols; ++c) {
        const int t = c < H * D ? 0 : c < (H + KVH) * D ? 1 : 2;
        got_g[t].push_back(g_dqkv[size_t(s0 + r) * ld + c]), ref_g[t].push_back(g[size_t(r) * ld + c]);
      }
    }
  }
  checks.push_back(lse_check);
  const char* what[3] = {"dq (samples <= 400 rows, 160-row prefixes of the others)", "dk (samples <= 400 rows)",
                        "dv (samples <= 400 rows)"};
  for (int t = 0; t < 3; ++t) {
    Check bwd{std::string("attention_backward fp32 ") + what[t], shape, "|err| <= 1e-5 max(1, max|ref|)"};
    const double g_tol = 1e-5 * std::max(1.0, max_abs_of(ref_g[t]));
    for (size_t e = 0; e < ref_g[t].size(); ++e) bwd.add(got_g[t][e], ref_g[t][e], g_tol, 0.0);
    checks.push_back(bwd);
  }
}

// Cross-entropy at V = 128256, N = 8192, about 10% of the rows not trained, normalised by the
// trained rows, dlogits in place of the logits. The loss against cpu::cross_entropy_forward over all
// rows; the gradient of 48 sampled rows. Rule (the emulator tests'): loss within 1e-5 relative;
// gradient within 1e-5 |ref| + 1e-6 max|ref| of the sampled rows.
void check_cross_entropy(std::vector<Check>& checks) {
  const int N = 8192, V = 128256;
  const std::string shape = dims({N, V});
  const std::vector<float> tile = make_tile(21, -6.0f, 6.0f);
  std::vector<int32_t> targets(N);
  std::mt19937 rng(22);
  int trained = 0;
  for (int n = 0; n < N; ++n) {
    targets[n] = rng() % 10 == 0 ? -100 : int32_t(rng() % V);
    if (n == 1) targets[n] = V - 1;
    if (n == 2) targets[n] = 0;
    trained += targets[n] >= 0;
  }
  Buffers m;
  const size_t nl = size_t(N) * V;
  float* logits = tiled(m, tile, nl);
  float* loss = m.alloc<float>(1);
  const int32_t* tgt = m.upload(targets);
  const size_t sb = cross_entropy_scratch_bytes(N, V);
  void* scratch = m.alloc<char>(sb);
  cross_entropy_forward({N, V, V, float(trained)}, loss, logits, logits, tgt, scratch, sb, nullptr);
  IFT_CUDA_CHECK(cudaDeviceSynchronize());
  const float g_loss = download(loss, 1)[0];

  const auto row_of = [&](int n) {
    std::vector<double> r(V);
    for (int c = 0; c < V; ++c) r[c] = tile[(size_t(n) * V + c) % kTile];
    return r;
  };
  double ref_loss = 0;
#pragma omp parallel for reduction(+ : ref_loss) schedule(dynamic, 64)
  for (int n = 0; n < N; ++n) {
    const std::vector<double> r = row_of(n);
    ref_loss += cpu::cross_entropy_forward<double>(nullptr, r.data(), &targets[n], {1, V, V, double(trained)});
  }
  Check lc{"cross_entropy_forward fp32 loss", shape, "|err| <= 1e-5 |ref|"};
  lc.add(g_loss, ref_loss, 0.0, 1e-5);
  checks.push_back(lc);

  std::vector<int> rows = {0, 1, 2, N - 1};
  for (int k = 0; k < 44; ++k) rows.push_back(int(rng() % N));
  std::vector<double> got, ref;
  std::vector<float> drow(V);
  for (int n : rows) {
    const std::vector<double> r = row_of(n);
    std::vector<double> d(V);
    cpu::cross_entropy_forward<double>(d.data(), r.data(), &targets[n], {1, V, V, double(trained)});
    IFT_CUDA_CHECK(cudaMemcpy(drow.data(), logits + size_t(n) * V, V * sizeof(float), cudaMemcpyDeviceToHost));
    got.insert(got.end(), drow.begin(), drow.end());
    ref.insert(ref.end(), d.begin(), d.end());
  }
  Check gc{"cross_entropy_forward fp32 dlogits (48 sampled rows)", shape, "|err| <= 1e-5 |ref| + 1e-6 max|ref|"};
  const double scale = max_abs_of(ref);
  for (size_t e = 0; e < ref.size(); ++e) gc.add(got[e], ref[e], 1e-6 * scale, 1e-5);
  checks.push_back(gc);
}

// LayerNorm and RMSNorm, forward and backward (dres null, dweight/dbias from zero), N = 2048 rows at
// C = 8192 and C = 16384: LayerNorm's backward needs 64 and 128 KiB of shared memory, RMSNorm's 32
// and 64 KiB, so both cross the 48 KiB line. Every row is compared (the reference is cheap). Rule (the
// emulator tests'): |err| <= 1e-5 |ref| + 1e-5 max|ref| of each tensor.
void check_norms(std::vector<Check>& checks) {
  const int N = 2048;
  const float eps = 1e-5f;
  const std::vector<float> tile_x = make_tile(31, -2.0f, 3.0f), tile_w = make_tile(32, 0.5f, 1.5f),
                           tile_b = make_tile(33, -0.5f, 0.5f), tile_d = make_tile(34, -1.0f, 1.0f);
  for (int C : {8192, 16384}) {
    for (bool rms : {false, true}) {
      const size_t NC = size_t(N) * C;
      const std::string op = rms ? "rmsnorm" : "layernorm", shape = dims({N, C});
      Buffers m;
      float *x = tiled(m, tile_x, NC), *w = tiled(m, tile_w, C), *b = rms ? nullptr : tiled(m, tile_b, C);
      float *dy = tiled(m, tile_d, NC), *y = m.alloc<float>(NC), *dx = m.alloc<float>(NC);
      float *mean = m.alloc<float>(N), *rstd = m.alloc<float>(N), *dw = m.zeros<float>(C), *db = m.zeros<float>(C);
      const size_t sf = rms ? rmsnorm_backward_scratch_floats(N, C) : layernorm_backward_scratch_floats(N, C);
      float* scratch = m.alloc<float>(sf);
      if (rms) {
        rmsnorm_forward(y, rstd, x, w, NormArgs{N, C, eps}, nullptr);
        rmsnorm_backward(dx, dw, nullptr, dy, x, w, rstd, NormArgs{N, C}, scratch, sf, nullptr);
      } else {
        layernorm_forward(y, mean, rstd, x, w, b, NormArgs{N, C, eps}, nullptr);
        layernorm_backward(dx, dw, db, nullptr, dy, x, w, mean, rstd, NormArgs{N, C}, scratch, sf, nullptr);
      }
      IFT_CUDA_CHECK(cudaDeviceSynchronize());
      const auto vec = [&](const std::vector<float>& t, size_t n) {
        std::vector<double> v(n);
        for (size_t i = 0; i < n; ++i) v[i] = t[i % kTile];
        return v;
      };
      const std::vector<double> xd = vec(tile_x, NC), wd = vec(tile_w, C), bd = vec(tile_b, C), dyd = vec(tile_d, NC);
      std::vector<double> yr(NC), meanr(N), rstdr(N), dxr(NC), dwr(C, 0.0), dbr(C, 0.0);
      if (rms) cpu::rmsnorm_forward(yr.data(), rstdr.data(), xd.data(), wd.data(), NormArgs{N, C, eps});
      else cpu::layernorm_forward(yr.data(), meanr.data(), rstdr.data(), xd.data(), wd.data(), bd.data(), NormArgs{N, C, eps});
      // The backward reference takes the statistics the kernel saved, as the kernel's backward did.
      const std::vector<float> g_mean = download(mean, N), g_rstd = download(rstd, N);
      const std::vector<double> meank(g_mean.begin(), g_mean.end()), rstdk(g_rstd.begin(), g_rstd.end());
      if (rms) cpu::rmsnorm_backward<double>(dxr.data(), dwr.data(), nullptr, dyd.data(), xd.data(), wd.data(), rstdk.data(), NormArgs{N, C});
      else
        cpu::layernorm_backward<double>(dxr.data(), dwr.data(), dbr.data(), nullptr, dyd.data(), xd.data(), wd.data(), meank.data(),
                                rstdk.data(), NormArgs{N, C});
      const auto compare = [&](const std::string& what, const std::vector<float>& got, const std::vector<double>& ref) {
        Check c{op + " fp32 " + what, shape, "|err| <= 1e-5 |ref| + 1e-5 max|ref|"};
        const double scale = max_abs_of(ref);
        for (size_t i = 0; i < ref.size(); ++i) c.add(got[i], ref[i], 1e-5 * scale, 1e-5);
        checks.push_back(c);
      };
      compare("forward out", download(y, NC), yr);
      compare("forward rstd", g_rstd, rstdr);
      if (!rms) compare("forward mean", g_mean, meanr);
      compare("backward dx", download(dx, NC), dxr);
      compare("backward dweight", download(dw, C), dwr);
      if (!rms) compare("backward dbias", download(db, C), dbr);
    }
  }
}

// AdamW over n = 2^31 + 4099 values (fp32 master, moments and gradients: 34 GB of device memory), one
// step with weight decay everywhere, then 12,000 sampled elements (the first and last 2,000, 2,000
// around 2^31, 6,000 random) against cpu::adamw_update on each element alone; and sum_of_squares over
// the same n against the double sum. Rules (the emulator tests'): master within 1e-7 + 1e-6 |ref|,
// m and v within 1e-6 |ref| + 1e-6 max|ref|; the sum of squares within 1e-5 relative.
void check_adamw(std::vector<Check>& checks) {
  const int64_t n = (int64_t(1) << 31) + 4099;
  const std::string shape = dims({n});
  const std::vector<float> tw = make_tile(41, -1.0f, 1.0f), tg = make_tile(42, -2.0f, 2.0f), tm = make_tile(43, -0.1f, 0.1f),
                           tv = make_tile(44, 0.0f, 0.01f);
  Buffers m;
  AdamWArgs u;
  float *master = tiled(m, tw, n), *mom1 = tiled(m, tm, n), *mom2 = tiled(m, tv, n);
  u.n = n, u.lr = 1e-3f, u.beta1 = 0.9f, u.beta2 = 0.95f, u.eps = 1e-8f, u.weight_decay = 0.1f, u.grad_scale = 0.5f, u.t = 3;
  const float* grads = tiled(m, tg, n);
  const size_t sf = sum_of_squares_scratch_floats(n);
  float *sum = m.alloc<float>(1), *scratch = m.alloc<float>(sf);
  sum_of_squares(sum, grads, n, scratch, sf, nullptr);
  adamw_update(u, master, mom1, mom2, nullptr, grads, nullptr);
  IFT_CUDA_CHECK(cudaDeviceSynchronize());

  // The double sum of the tiled gradient: whole tiles, then the rest.
  double tile_sum = 0, rest = 0;
  const int64_t whole = n / int64_t(kTile), left = n % int64_t(kTile);
  for (size_t i = 0; i < kTile; ++i) (int64_t(i) < left ? rest : tile_sum) += double(tg[i]) * tg[i];
  const double ref_sum = (tile_sum + rest) * double(whole) + rest;
  Check sc{"sum_of_squares fp32", shape, "|err| <= 1e-5 |ref|"};
  sc.add(download(sum, 1)[0], ref_sum, 0.0, 1e-5);
  checks.push_back(sc);

  std::vector<int64_t> idx;
  for (int64_t i = 0; i < 2000; ++i) idx.push_back(i), idx.push_back(n - 1 - i), idx.push_back((int64_t(1) << 31) - 1000 + i);
  std::mt19937_64 rng(45);
  for (int k = 0; k < 6000; ++k) idx.push_back(int64_t(rng() % uint64_t(n)));
  AdamWArgs step = u;  // one element at a time
  step.n = 1;
  std::vector<double> gw, rw, gm, rm, gv, rv;
  for (int64_t i : idx) {
    float w = tw[size_t(i) % kTile], g = tg[size_t(i) % kTile], mm = tm[size_t(i) % kTile], vv = tv[size_t(i) % kTile];
    cpu::adamw_update<float>(&w, &g, &mm, &vv, step);
    float kw = 0, km = 0, kv = 0;
    IFT_CUDA_CHECK(cudaMemcpy(&kw, master + i, sizeof(float), cudaMemcpyDeviceToHost));
    IFT_CUDA_CHECK(cudaMemcpy(&km, mom1 + i, sizeof(float), cudaMemcpyDeviceToHost));
    IFT_CUDA_CHECK(cudaMemcpy(&kv, mom2 + i, sizeof(float), cudaMemcpyDeviceToHost));
    gw.push_back(kw), rw.push_back(w), gm.push_back(km), rm.push_back(mm), gv.push_back(kv), rv.push_back(vv);
  }
  const auto compare = [&](const std::string& what, const std::vector<double>& got, const std::vector<double>& ref, double atol,
                           const std::string& rule) {
    Check c{"adamw_update fp32 " + what + " (12000 sampled elements, 2000 past 2^31)", shape, rule};
    for (size_t e = 0; e < ref.size(); ++e) c.add(got[e], ref[e], atol, 1e-6);
    checks.push_back(c);
  };
  compare("master", gw, rw, 1e-7, "|err| <= 1e-7 + 1e-6 |ref|");
  compare("m", gm, rm, 1e-6 * max_abs_of(rm), "|err| <= 1e-6 |ref| + 1e-6 max|ref|");
  compare("v", gv, rv, 1e-6 * max_abs_of(rv), "|err| <= 1e-6 |ref| + 1e-6 max|ref|");
}

// Runs every case; a case that throws is a failed check naming the error. Exit 1 on any failure.
int run_checks(bool as_json) {
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess || count == 0) {
    std::fprintf(stderr, "ift bench kernels --check: no CUDA device (%s)\n",
                 cudaGetErrorString(e != cudaSuccess ? e : cudaErrorNoDevice));
    return 1;
  }
  cudaDeviceProp prop{};
  IFT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  set_sync_after_launch(true);  // a fault names its kernel
  std::vector<Check> checks;
  const std::pair<const char*, void (*)(std::vector<Check>&)> cases[] = {
      {"attention", check_attention}, {"cross_entropy", check_cross_entropy}, {"norms", check_norms}, {"adamw", check_adamw}};
  for (const auto& [name, run] : cases) {
    try {
      run(checks);
    } catch (const std::exception& e) {
      Check c{std::string(name) + ": the case failed to run", "", e.what()};
      c.compared = 1, c.failed = 1;
      checks.push_back(c);
      cudaGetLastError();  // clear a non-sticky error so the next case can run
    }
  }
  bool all = true;
  for (const Check& c : checks) all = all && c.passed();
  if (as_json) {
    using nlohmann::json;
    json doc = {{"device", {{"name", prop.name}, {"compute_capability", std::to_string(prop.major) + "." + std::to_string(prop.minor)}}},
                {"passed", all}, {"checks", json::array()}};
    for (const Check& c : checks)
      doc["checks"].push_back({{"name", c.name}, {"shape", c.shape}, {"rule", c.rule}, {"compared", c.compared},
                               {"failed", c.failed}, {"max_error", c.max_error}, {"worst_error", c.worst_error},
                               {"tolerance_at_worst", c.worst_tolerance}, {"passed", c.passed()}});
    std::printf("%s\n", doc.dump(2).c_str());
  } else {
    std::printf("device: %s (sm_%d%d); kernels in fp32 against the CPU reference in double\n", prop.name, prop.major,
                prop.minor);
    for (const Check& c : checks)
      std::printf("%s  %-84s %-24s max err %.3e; worst element %.3e vs tolerance %.3e (%zu of %zu out; %s)\n",
                  c.passed() ? "PASS" : "FAIL", c.name.c_str(), c.shape.c_str(), c.max_error, c.worst_error, c.worst_tolerance,
                  c.failed, c.compared, c.rule.c_str());
    std::printf("%s\n", all ? "all checks passed" : "SOME CHECKS FAILED");
  }
  return all ? 0 : 1;
}

}  // namespace

int bench_kernels(Args args) {
  cli::Parser p = parser();
  if (!p.parse(args)) return 0;
  if (p.on("--check")) return run_checks(p.on("--json"));
  const Shape s{int(p.integer("--batch")), int(p.integer("--seq-len")), int(p.integer("--channels")),
                int(p.integer("--heads")), int(p.integer("--vocab")), p.integer("--params")};
  const int warmup = int(p.integer("--warmup")), reps = int(p.integer("--reps"));
  const std::string dtype = p.str("--dtype");
  IFT_CHECK(s.B > 0 && s.T > 0 && s.C > 0 && s.H > 0 && s.V > 0 && s.params > 0, "shape options must be positive");
  IFT_CHECK(s.C % s.H == 0, "--channels ", s.C, " is not a multiple of --heads ", s.H);
  IFT_CHECK(warmup >= 0 && reps > 0, "--warmup must be >= 0 and --reps > 0");
  IFT_CHECK(dtype == "bf16" || dtype == "fp32" || dtype == "both", "--dtype must be bf16, fp32 or both, got '", dtype, "'");
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess || count == 0) {
    std::printf("ift bench kernels: no CUDA device (%s)\n", cudaGetErrorString(e != cudaSuccess ? e : cudaErrorNoDevice));
    return 0;
  }

  cudaDeviceProp prop{};
  IFT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  int mem_khz = 0, bus_bits = 0;  // cudaDeviceProp lost memoryClockRate in CUDA 13: ask the attributes
  IFT_CUDA_CHECK(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0));
  IFT_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0));
  const double peak_gbps = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) / 1e9;  // double data rate
  const KnownGpu* gpu = known_gpu(prop.name);

  Bench b(warmup, reps, size_t(prop.l2CacheSize), p.str("--filter"));
  if (dtype != "fp32") bench_dtype<__nv_bfloat16>(b, s);
  if (dtype != "bf16") bench_dtype<float>(b, s);

  using nlohmann::json;
  json doc = {
      {"device", {{"name", prop.name}, {"compute_capability", std::to_string(prop.major) + "." + std::to_string(prop.minor)},
                  {"sms", prop.multiProcessorCount}, {"l2_bytes", prop.l2CacheSize}, {"memory_bytes", prop.totalGlobalMem},
                  {"peak_memory_gbps", peak_gbps}, {"peak_bf16_tflops", gpu ? json(gpu->bf16) : json(nullptr)},
                  {"peak_fp32_tflops", gpu ? json(gpu->fp32) : json(nullptr)}}},
      {"settings", {{"batch", s.B}, {"seq_len", s.T}, {"channels", s.C}, {"heads", s.H}, {"vocab", s.V},
                    {"params", s.params}, {"warmup", warmup}, {"reps", reps}, {"statistic", "median"},
                    {"l2_flush_bytes", b.flush_bytes()}}},
      {"results", json::array()}};
  for (const Result& r : b.results) {
    // The ceiling: memory bandwidth for bytes, the dtype's dense matmul peak for FLOPs.
    const double rate = r.work / (r.ms * 1e-3);
    const double peak = r.flops ? (gpu ? (r.dtype == "bf16" ? gpu->bf16 : gpu->fp32) * 1e12 : 0) : peak_gbps * 1e9;
    json j = {{"kernel", r.kernel}, {"dtype", r.dtype}, {"shape", r.shape}, {"ms", r.ms},
              {r.flops ? "flops" : "bytes", r.work}, {r.flops ? "tflops" : "gbps", rate / (r.flops ? 1e12 : 1e9)},
              {"percent_of_peak", peak > 0 ? json(100 * rate / peak) : json(nullptr)}, {"baseline", nullptr}};
    if (r.device_bytes > 0) {
      j["device_bytes"] = r.device_bytes, j["logits_bytes"] = r.logits_bytes;
      j["baseline_missing"] = "the fused and unfused paths are two rows: compare them";
    } else if (r.baseline.empty()) {
      j["baseline_missing"] = kNoAttentionBaseline;
    } else {
      j["baseline"] = {{"name", r.baseline}, {"ms", r.baseline_ms}, {"ratio", r.ms / r.baseline_ms}};
    }
    if (r.cudnn && r.cudnn_ms > 0) j["cudnn"] = {{"ms", r.cudnn_ms}, {"ratio", r.ms / r.cudnn_ms}};
    else if (r.cudnn) j["cudnn_missing"] = r.cudnn_missing;
    doc["results"].push_back(j);
  }
  if (p.on("--json")) {
    std::printf("%s\n", doc.dump(2).c_str());
    return 0;
  }

  std::printf("device: %s (sm_%d%d, %d SMs, %.0f MiB L2, %.0f GiB); peak memory bandwidth %.0f GB/s (memory clock x "
              "bus width); dense peak ",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize / 1048576.0,
              prop.totalGlobalMem / 1073741824.0, peak_gbps);
  if (gpu) std::printf("bf16 %.0f, fp32 %.1f TFLOP/s (table of known GPUs)\n", gpu->bf16, gpu->fp32);
  else std::printf("TFLOP/s unknown (not in the table of known GPUs)\n");
  std::printf("shape: B=%d T=%d (N=%d tokens), C=%d H=%d D=%d V=%d, AdamW over %lld params; median of %d reps after "
              "%d warm-up, %.0f MiB written before each to flush the L2\n",
              s.B, s.T, s.B * s.T, s.C, s.H, s.C / s.H, s.V, (long long)s.params, reps, warmup, b.flush_bytes() / 1048576.0);
  std::printf("shapes: (rows, cols); matmul N x O x K; attention B x T x H x D (x KVH x D for the GPT-2/Llama set). ratio = ms / baseline ms\n\n");
  std::printf("%-22s %-5s %-15s %9s %15s %8s  %-13s %9s %6s  %9s %6s\n", "kernel", "dtype", "shape", "ms", "rate",
              "% peak", "baseline", "base ms", "ratio", "cudnn ms", "ratio");
  std::string cudnn_missing;  // the first reason cuDNN was not measured, printed once below
  for (const json& r : doc["results"]) {
    const bool flops = r.contains("tflops");
    char rate[32], pct[16], base[64];
    std::snprintf(rate, sizeof rate, flops ? "%.1f TFLOP/s" : "%.0f GB/s", r[flops ? "tflops" : "gbps"].get<double>());
    std::snprintf(pct, sizeof pct, "%.1f%%", r["percent_of_peak"].is_null() ? 0.0 : r["percent_of_peak"].get<double>());
    std::snprintf(base, sizeof base, "%-13s %9s %6s", "-", "-", "-");
    if (!r["baseline"].is_null())
      std::snprintf(base, sizeof base, "%-13s %9.4f %6.2f", r["baseline"]["name"].get<std::string>().c_str(),
                    r["baseline"]["ms"].get<double>(), r["baseline"]["ratio"].get<double>());
    char second[32] = "";
    if (r.contains("cudnn"))
      std::snprintf(second, sizeof second, "  %9.4f %6.2f", r["cudnn"]["ms"].get<double>(), r["cudnn"]["ratio"].get<double>());
    else if (r.contains("cudnn_missing"))
      std::snprintf(second, sizeof second, "  %9s %6s", "-", "-");
    if (r.contains("cudnn_missing") && cudnn_missing.empty()) cudnn_missing = r["cudnn_missing"].get<std::string>();
    std::printf("%-22s %-5s %-15s %9.4f %15s %8s  %s%s\n", r["kernel"].get<std::string>().c_str(),
                r["dtype"].get<std::string>().c_str(), r["shape"].get<std::string>().c_str(), r["ms"].get<double>(), rate,
                r["percent_of_peak"].is_null() ? "unknown" : pct, base, second);
  }
  for (const Result& r : b.results)
    if (r.device_bytes > 0)
      std::printf("%-28s %-5s %-30s %9.4f ms, %8.1f MiB of device memory held (%8.1f MiB of logits)\n", r.kernel.c_str(),
                  r.dtype.c_str(), r.shape.c_str(), r.ms, r.device_bytes / 1048576.0, r.logits_bytes / 1048576.0);
  if (b.wanted("attention_forward") || b.wanted("attention_backward"))
  {
    std::printf("\nbf16 attention: the dispatch's kernel (shape suffix) against the SIMT kernels and cuDNN's fused "
                "attention (ratio = ms / cudnn ms); fp32 attention has no baseline: %s\n", kNoAttentionBaseline);
    if (!cudnn_missing.empty()) std::printf("cuDNN not measured (first reason): %s\n", cudnn_missing.c_str());
  }
  return 0;
}

#endif  // IFT_HAVE_CUDA

}  // namespace ift::cmd
