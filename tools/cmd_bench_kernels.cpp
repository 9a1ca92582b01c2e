// `ift bench kernels`: times the CUDA kernels of kernels/ (their ift::cuda build) on one GPU, at a
// GPT-2-124M-like shape, in bf16 and fp32, each next to a baseline: a device-to-device copy of the
// same traffic for the memory-bound ops, cublasGemmEx for the matmuls (which the engine runs
// through cuBLASLt). Attention has no baseline (see kNoAttentionBaseline).
//
// Method: CUDA events around each repetition, --warmup untimed repetitions first, the median of
// --reps, and the L2 cache flushed before each repetition by a cudaMemsetAsync of twice its size,
// outside the events. Ceilings: memory bandwidth from the device's memory clock and bus width;
// dense matmul peaks from a table of known GPUs (kKnownGpus), "unknown" for any other GPU. Each
// op's byte or FLOP count is written where it is measured; docs/benchmarks.md has the rest.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
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

#include "engine/cuda/check.h"
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
  return p;
}

}  // namespace

#if !IFT_HAVE_CUDA

int bench_kernels(Args args) {
  if (!parser().parse(args)) return 0;
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

// Why attention has no baseline (printed, and the JSON's "baseline_missing").
constexpr const char* kNoAttentionBaseline =
    "`ift` does not link cuDNN, and cuDNN 9's fused attention is reachable only through its graph API "
    "(the cudnn_frontend headers, or dozens of backend descriptors): too much for this small tool";

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
    // read x, weight, bias; write out, mean, rstd (fp32)
    b.memory_bound("layernorm_forward", dt, dims({N, C}), 2 * e * NC + 2 * e * C + 8.0 * N,
                   [&] { layernorm_forward(y, mean, rstd, x, w, bias, N, C, 1e-5f, st); });
    // read dout, x, weight, mean, rstd; write dx; read and write dweight, dbias (fp32). The
    // per-block partial sums in scratch are the kernel's choice, not counted.
    b.memory_bound("layernorm_backward", dt, dims({N, C}), 3 * e * NC + e * C + 8.0 * N + 16.0 * C,
                   [&] { layernorm_backward(dx, dw, db, nullptr, y, x, w, mean, rstd, N, C, scratch, sf, st); });
    // read x, weight; write out, rstd
    b.memory_bound("rmsnorm_forward", dt, dims({N, C}), 2 * e * NC + e * C + 4.0 * N,
                   [&] { rmsnorm_forward(y, rstd, x, w, N, C, 1e-5f, st); });
  }
  {
    Buffers m;
    T *a = m.random<T>(NF), *g = m.random<T>(NF), *y = m.alloc<T>(NF), *gate_up = m.random<T>(2 * NF);
    // read inp; write out
    b.memory_bound("gelu_forward", dt, dims({N, F}), 2 * e * NF, [&] { gelu_forward(y, a, NF, st); });
    // read inp, dout; write dinp
    b.memory_bound("gelu_backward", dt, dims({N, F}), 3 * e * NF, [&] { gelu_backward(y, a, g, NF, st); });
    // read gate and up (N, 2F); write out (N, F)
    b.memory_bound("swiglu_forward", dt, dims({N, 2 * F}), 3 * e * NF, [&] { swiglu_forward(y, gate_up, N, F, st); });
    // read a, b; write out
    b.memory_bound("residual_forward", dt, dims({N, C}), 3 * e * NC, [&] { residual_forward(y, a, g, NC, st); });
    std::vector<int32_t> tokens(N), positions(N);
    std::mt19937 rng(1234);
    for (int i = 0; i < N; ++i) tokens[i] = int32_t(rng() % V), positions[i] = i % s.T;
    const int32_t *tok = m.upload(tokens), *pos = m.upload(positions);
    T *wte = m.random<T>(size_t(V) * C), *wpe = m.random<T>(size_t(s.T) * C);
    // read tokens, positions, the N gathered rows of wte and of wpe; write out
    b.memory_bound("embedding_forward", dt, dims({N, C}), 3 * e * NC + 8.0 * N,
                   [&] { embedding_forward(y, tok, pos, wte, wpe, N, C, V, s.T, st); });
  }
  if (b.wanted("attention_forward") || b.wanted("attention_backward")) {
    Buffers m;
    std::vector<int32_t> cu;
    for (int i = 0; i <= s.B; ++i) cu.push_back(i * s.T);
    AttentionParams p;
    p.N = N, p.H = H, p.KVH = H, p.D = D, p.ld = 3 * C, p.S = s.B, p.scale = 1.0f / std::sqrt(float(D));
    p.cu_seqlens = m.upload(cu), p.cu_seqlens_host = cu.data();
    T *qkv = m.random<T>(size_t(N) * p.ld), *dqkv = m.alloc<T>(size_t(N) * p.ld), *out = m.alloc<T>(NC);
    T* dout = m.random<T>(NC);
    float *lse = m.alloc<float>(size_t(N) * H), *delta = m.alloc<float>(size_t(N) * H);
    // FlashAttention's count: QK^T and PV, 2 FLOPs per multiply-add, causal (half of each T x T);
    // the backward's five matmuls count 2.5 times the forward's two.
    const double fwd = 4.0 * s.B * (double(s.T) * s.T / 2) * H * D;
    const std::string shape = dims({s.B, s.T, H, D});
    if (b.wanted("attention_forward"))
      b.measure({"attention_forward", dt, shape, fwd, true, ""}, [&] { attention_forward(out, lse, qkv, p, st); });
    attention_forward(out, lse, qkv, p, st);  // the backward's out and lse
    if (b.wanted("attention_backward"))
      b.measure({"attention_backward", dt, shape, 2.5 * fwd, true, ""},
                [&] { attention_backward(dqkv, delta, dout, qkv, out, lse, p, st); });
  }
  if (b.wanted("cross_entropy_forward")) {
    Buffers m;
    std::vector<int32_t> targets(N);
    std::mt19937 rng(1234);
    for (int32_t& t : targets) t = int32_t(rng() % V);
    const int32_t* tgt = m.upload(targets);
    T* logits = m.random<T>(size_t(N) * V);
    float* loss = m.alloc<float>(1);
    const size_t sb = cross_entropy_scratch_bytes(N, V);
    void* scratch = m.alloc<char>(sb);
    // read logits, targets; write dlogits (over the logits, as the trainer does) and the loss
    b.memory_bound("cross_entropy_forward", dt, dims({N, V}), 2 * e * N * V + 4.0 * N + 4, [&] {
      cross_entropy_forward(loss, logits, logits, tgt, N, V, float(N), scratch, sb, st);
    });
  }
  {
    Buffers m;
    const int64_t n = s.params;
    AdamWUpdate u;
    u.master = m.random<float>(n), u.m = m.zeros<float>(n), u.v = m.zeros<float>(n);
    u.params_bf16 = bf16 ? m.alloc<__nv_bfloat16>(n) : nullptr;  // the bf16 working copy, when training in bf16
    u.n = n, u.lr = 1e-4f, u.weight_decay = 0.1f;
    const T* grads = m.random<T>(n);
    // read and write master, m, v (fp32); read grads; write the bf16 weights (bf16 only)
    b.memory_bound("adamw_update", dt, dims({n}), 24.0 * n + e * n + (bf16 ? 2.0 * n : 0.0),
                   [&] { adamw_update(u, grads, st); });
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

}  // namespace

int bench_kernels(Args args) {
  cli::Parser p = parser();
  if (!p.parse(args)) return 0;
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
    if (r.baseline.empty()) j["baseline_missing"] = kNoAttentionBaseline;
    else j["baseline"] = {{"name", r.baseline}, {"ms", r.baseline_ms}, {"ratio", r.ms / r.baseline_ms}};
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
  std::printf("shapes: (rows, cols); matmul N x O x K; attention B x T x H x D. ratio = ms / baseline ms\n\n");
  std::printf("%-22s %-5s %-15s %9s %15s %8s  %-13s %9s %6s\n", "kernel", "dtype", "shape", "ms", "rate", "% peak",
              "baseline", "base ms", "ratio");
  for (const json& r : doc["results"]) {
    const bool flops = r.contains("tflops");
    char rate[32], pct[16], base[64];
    std::snprintf(rate, sizeof rate, flops ? "%.1f TFLOP/s" : "%.0f GB/s", r[flops ? "tflops" : "gbps"].get<double>());
    std::snprintf(pct, sizeof pct, "%.1f%%", r["percent_of_peak"].is_null() ? 0.0 : r["percent_of_peak"].get<double>());
    std::snprintf(base, sizeof base, "%-13s %9s %6s", "-", "-", "-");
    if (!r["baseline"].is_null())
      std::snprintf(base, sizeof base, "%-13s %9.4f %6.2f", r["baseline"]["name"].get<std::string>().c_str(),
                    r["baseline"]["ms"].get<double>(), r["baseline"]["ratio"].get<double>());
    std::printf("%-22s %-5s %-15s %9.4f %15s %8s  %s\n", r["kernel"].get<std::string>().c_str(),
                r["dtype"].get<std::string>().c_str(), r["shape"].get<std::string>().c_str(), r["ms"].get<double>(), rate,
                r["percent_of_peak"].is_null() ? "unknown" : pct, base);
  }
  if (b.wanted("attention_forward") || b.wanted("attention_backward"))
    std::printf("\nattention has no baseline: %s\n", kNoAttentionBaseline);
  return 0;
}

#endif  // IFT_HAVE_CUDA

}  // namespace ift::cmd
