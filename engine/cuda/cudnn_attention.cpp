// cuDNN's fused attention as graphs of cuDNN 9 backend descriptors (engine/cuda/cudnn_attention.h).
// There is no cudnn_frontend here: the graphs are the operation graphs that cuDNN's fused flash
// attention engines recognise (two matmuls around a masked, scaled softmax that writes its
// log-sum-exp; the backward's five matmuls), built descriptor by descriptor. Compiled and linked,
// never run (no GPU): tools/gpu_check.sh is where it meets cuDNN's engines.
#include "engine/cuda/cudnn_attention.h"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/base/error.h"

#if IFT_HAVE_CUDNN
#include <cudnn_graph.h>

#include <array>
#include <map>
#include <tuple>
#include <utility>

#include "engine/cuda/check.h"
#endif

namespace ift {

std::string cudnn_attention_unsupported(const AttentionArgs& a) {
  if (!cudnn_head_dim_supported(a.D))
    return "head dim " + std::to_string(a.D) + " (cuDNN's fused attention takes multiples of 8 up to 128 here)";
  if (a.ld % 8 != 0) return "row stride " + std::to_string(a.ld) + " of qkv (a multiple of 8, for 16-byte rows)";
  if (int64_t(a.N) * a.ld >= std::numeric_limits<int32_t>::max())
    return "a batch of " + std::to_string(int64_t(a.N) * a.ld) + " elements (int32 ragged offsets)";
  return "";
}

#if !IFT_HAVE_CUDNN

struct CudnnAttention::Impl {};

CudnnAttention::CudnnAttention(cudaStream_t) {
  fail("attention: cudnn: this build has no cuDNN (CMake found no cudnn_graph.h and libcudnn; install cuDNN 9 "
       "and reconfigure, or use attention: ift)");
}
CudnnAttention::~CudnnAttention() = default;
void CudnnAttention::forward(__nv_bfloat16*, float*, const __nv_bfloat16*, const AttentionArgs&) {}
void CudnnAttention::backward(__nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*, const __nv_bfloat16*,
                              const float*, const AttentionArgs&) {}

#else

namespace {

// The tensors a graph binds, by unique id. Q, K, V, dQ, dK, dV are views into the fused qkv (dqkv)
// buffer; virtual tensors (the scores and probabilities) take ids from kVirtual on.
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kScale, kNegInf, kOne, kSeqLen, kRaggedQkv, kRaggedO, kRaggedStats,
  kDO, kDQ, kDK, kDV, kSoftmaxSum, kDQAccum, kVirtual = 100
};

// Owned descriptors of one graph, destroyed in reverse order of creation (a plan before the graph
// and tensors it refers to).
class Descriptors {
 public:
  Descriptors() = default;
  Descriptors(Descriptors&& o) noexcept : all_(std::exchange(o.all_, {})) {}
  Descriptors& operator=(Descriptors&& o) noexcept {
    std::swap(all_, o.all_);
    return *this;
  }
  ~Descriptors() {
    for (auto it = all_.rbegin(); it != all_.rend(); ++it) cudnnBackendDestroyDescriptor(*it);
  }
  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type) {
    cudnnBackendDescriptor_t d = nullptr;
    IFT_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d));
    all_.push_back(d);
    return d;
  }

 private:
  std::vector<cudnnBackendDescriptor_t> all_;
};

void set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type,
         int64_t count, const void* values) {
  IFT_CUDNN_CHECK(cudnnBackendSetAttribute(d, name, type, count, values));
}
void set_desc(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendDescriptor_t value) {
  set(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value);
}

using Dims = std::array<int64_t, 4>;

// Builds one operation graph: tensors, then pointwise, reduction, reshape and matmul operations, in
// the order the data flows.
class GraphBuilder {
 public:
  explicit GraphBuilder(Descriptors& ds) : ds_(ds) {}

  struct TensorSpec {
    cudnnDataType_t type = CUDNN_DATA_FLOAT;
    bool is_virtual = false, by_value = false;
    cudnnBackendDescriptor_t ragged = nullptr;  // a ragged-offset tensor: batch entry b starts there
    bool reorder_f16x16 = false;                // the layout cuDNN's engines want for P and dQ's accumulator
  };
  cudnnBackendDescriptor_t tensor(int64_t uid, Dims dims, Dims strides, TensorSpec s) {
    cudnnBackendDescriptor_t t = ds_.make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
    const int64_t alignment = 16;
    set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
    set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &s.type);
    set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data());
    set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data());
    set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
    set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &s.is_virtual);
    set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &s.by_value);
    if (s.reorder_f16x16) {
      const cudnnBackendTensorReordering_t mode = CUDNN_TENSOR_REORDERING_F16x16;
      set(t, CUDNN_ATTR_TENSOR_REORDERING_MODE, CUDNN_TYPE_TENSOR_REORDERING_MODE, 1, &mode);
    }
    if (s.ragged) set_desc(t, CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, s.ragged);
    IFT_CUDNN_CHECK(cudnnBackendFinalize(t));
    return t;
  }
  // A virtual tensor of dense strides: the intermediates, which never reach memory.
  cudnnBackendDescriptor_t temp(Dims dims, cudnnDataType_t type = CUDNN_DATA_FLOAT, bool reorder = false) {
    const Dims strides{dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1};
    return tensor(virtual_uid(), dims, strides, {type, true, false, nullptr, reorder});
  }
  cudnnBackendDescriptor_t scalar(int64_t uid, cudnnDataType_t type = CUDNN_DATA_FLOAT) {
    return tensor(uid, {1, 1, 1, 1}, {1, 1, 1, 1}, {type, false, true});
  }

  // y = mode(x[, b[, t]]); GEN_INDEX takes an axis. Comparisons and logic compute in BOOLEAN.
  void pointwise(cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t b,
                 cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y, int64_t axis = -1,
                 cudnnDataType_t math = CUDNN_DATA_FLOAT) {
    cudnnBackendDescriptor_t pw = ds_.make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
    set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode);
    set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math);
    if (axis >= 0) set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis);
    IFT_CUDNN_CHECK(cudnnBackendFinalize(pw));
    cudnnBackendDescriptor_t op = ds_.make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw);
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x);
    if (b) set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b);
    if (t) set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t);
    set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y);
    finish(op);
  }
  void reduction(cudnnReduceTensorOp_t reduce, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t r = ds_.make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
    const cudnnDataType_t math = CUDNN_DATA_FLOAT;
    set(r, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &reduce);
    set(r, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &math);
    IFT_CUDNN_CHECK(cudnnBackendFinalize(r));
    cudnnBackendDescriptor_t op = ds_.make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, r);
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x);
    set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y);
    finish(op);
  }
  // y: the same values as x under other strides (a transpose of the last two dims).
  void reshape(cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    cudnnBackendDescriptor_t op = ds_.make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
    set_desc(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x);
    set_desc(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y);
    finish(op);
  }
  // c (.., M, N) = a (.., M, K) b (.., K, N), fp32 accumulation; the overrides are per-entry lengths
  // (the sequence-length tensor) bounding M, N or K of each batch entry.
  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c,
              cudnnBackendDescriptor_t m_override, cudnnBackendDescriptor_t n_override,
              cudnnBackendDescriptor_t k_override) {
    cudnnBackendDescriptor_t mm = ds_.make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
    const cudnnDataType_t math = CUDNN_DATA_FLOAT;
    set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &math);
    IFT_CUDNN_CHECK(cudnnBackendFinalize(mm));
    cudnnBackendDescriptor_t op = ds_.make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm);
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a);
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b);
    set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c);
    if (m_override) set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, m_override);
    if (n_override) set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, n_override);
    if (k_override) set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, k_override);
    finish(op);
  }

  int64_t virtual_uid() { return next_virtual_++; }
  const std::vector<cudnnBackendDescriptor_t>& ops() const { return ops_; }

 private:
  void finish(cudnnBackendDescriptor_t op) {
    IFT_CUDNN_CHECK(cudnnBackendFinalize(op));
    ops_.push_back(op);
  }
  Descriptors& ds_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  int64_t next_virtual_ = kVirtual;
};

// The plan of one shape: its descriptors (the plan last), the workspace it needs.
struct Plan {
  Descriptors ds;
  cudnnBackendDescriptor_t plan = nullptr;
  int64_t workspace = 0;
};

// What a plan depends on: direction, padded batch entries and length, heads, head dim, row stride.
using PlanKey = std::tuple<bool, int64_t, int64_t, int, int, int, int>;

int64_t pow2_at_least(int64_t x, int64_t floor) {
  int64_t p = floor;
  while (p < x) p *= 2;
  return p;
}

}  // namespace

struct CudnnAttention::Impl {
  cudnnHandle_t handle = nullptr;
  cudaStream_t stream = nullptr;
  std::map<PlanKey, Plan> plans;
  // Device scratch, grown to fit: the plan workspace, the backward's softmax sums (N, H) and fp32 dQ
  // accumulator (N, H*D), then the lengths and offsets of the call (int32).
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  std::vector<int32_t> host_meta;  // the lengths and offsets, staged on the host

  ~Impl() {
    plans.clear();
    if (scratch) cudaFree(scratch);
    if (handle) cudnnDestroy(handle);
  }

  char* reserve(size_t bytes) {
    if (bytes > scratch_bytes) {
      IFT_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old scratch may still be in use
      if (scratch) IFT_CUDA_CHECK(cudaFree(scratch));
      scratch = nullptr, scratch_bytes = 0;
      IFT_CUDA_CHECK(cudaMalloc(&scratch, bytes));
      scratch_bytes = bytes;
    }
    return static_cast<char*>(scratch);
  }

  // The shape cuDNN sees: B entries (segments, then empty ones) of at most S rows.
  struct Shape {
    int64_t B = 0, S = 0;
  };
  static Shape shape_of(const AttentionArgs& a) {
    int longest = 0;
    for (int s = 0; s < a.S; ++s) longest = std::max(longest, a.cu_seqlens_host[s + 1] - a.cu_seqlens_host[s]);
    return {pow2_at_least(a.S, 1), pow2_at_least(longest, 64)};
  }

  // The per-entry lengths (B), then the ragged offsets, in elements, of entry b in the qkv layout
  // (row stride ld), the out layout (row stride H*D) and the statistics (row stride H) (B + 1 each).
  // Empty entries sit at the end of the batch. Staged on the host, copied once on the stream.
  int32_t* upload_meta(const AttentionArgs& a, Shape sh, char* at) {
    const int64_t B = sh.B;
    host_meta.assign(size_t(B + 3 * (B + 1)), 0);
    int32_t* len = host_meta.data();
    int32_t *off_qkv = len + B, *off_o = off_qkv + B + 1, *off_st = off_o + B + 1;
    for (int64_t b = 0; b <= B; ++b) {
      const int32_t row = a.cu_seqlens_host[std::min<int64_t>(b, a.S)];
      if (b < B) len[b] = a.cu_seqlens_host[std::min<int64_t>(b + 1, a.S)] - row;
      off_qkv[b] = row * a.ld, off_o[b] = row * a.H * a.D, off_st[b] = row * a.H;
    }
    int32_t* device = reinterpret_cast<int32_t*>(at);
    // Pageable source: the call returns once the bytes are staged, so host_meta may change after it.
    IFT_CUDA_CHECK(cudaMemcpyAsync(device, host_meta.data(), host_meta.size() * sizeof(int32_t),
                                   cudaMemcpyHostToDevice, stream));
    return device;
  }

  // Layouts, shared by both graphs. Entry b of Q is rows [cu[b], cu[b+1]) of qkv; head h is columns
  // [h*D, (h+1)*D); K and V follow Q's H*D columns.
  struct Layout {
    int64_t B, S, H, KVH, D, ld;
    Dims q_dims() const { return {B, H, S, D}; }
    Dims kv_dims() const { return {B, KVH, S, D}; }
    Dims kv_t_dims() const { return {B, KVH, D, S}; }
    Dims qkv_strides() const { return {S * ld, D, ld, 1}; }        // (B, heads, S, D) in qkv rows
    Dims qkv_t_strides() const { return {S * ld, D, 1, ld}; }      // (B, heads, D, S): the transpose
    Dims o_strides() const { return {S * H * D, D, H * D, 1}; }    // (B, H, S, D) in rows of H*D
    Dims stats_dims() const { return {B, H, S, 1}; }
    Dims stats_strides() const { return {S * H, 1, H, 1}; }        // lse (N, H)
    Dims scores() const { return {B, H, S, S}; }
    Dims rows() const { return {B, H, S, 1}; }
  };

  // The tensors both graphs start from: lengths, offsets, scale; the causal and padding mask on
  // scores s (entry-local row >= column, both below the entry's length), -inf elsewhere.
  struct Common {
    cudnnBackendDescriptor_t seq, rag_qkv, rag_o, rag_st, scale;
  };
  static Common common(GraphBuilder& g, const Layout& l) {
    Common c;
    c.seq = g.tensor(kSeqLen, {l.B, 1, 1, 1}, {1, 1, 1, 1}, {CUDNN_DATA_INT32});
    c.rag_qkv = g.tensor(kRaggedQkv, {l.B + 1, 1, 1, 1}, {1, 1, 1, 1}, {CUDNN_DATA_INT32});
    c.rag_o = g.tensor(kRaggedO, {l.B + 1, 1, 1, 1}, {1, 1, 1, 1}, {CUDNN_DATA_INT32});
    c.rag_st = g.tensor(kRaggedStats, {l.B + 1, 1, 1, 1}, {1, 1, 1, 1}, {CUDNN_DATA_INT32});
    c.scale = g.scalar(kScale);
    return c;
  }
  static cudnnBackendDescriptor_t masked_scores(GraphBuilder& g, const Layout& l, const Common& c,
                                                cudnnBackendDescriptor_t q, cudnnBackendDescriptor_t k_t) {
    cudnnBackendDescriptor_t s = g.temp(l.scores()), scaled = g.temp(l.scores());
    g.matmul(q, k_t, s, c.seq, c.seq, nullptr);
    g.pointwise(CUDNN_POINTWISE_MUL, s, c.scale, nullptr, scaled);
    cudnnBackendDescriptor_t row = g.temp(l.scores()), col = g.temp(l.scores());
    g.pointwise(CUDNN_POINTWISE_GEN_INDEX, scaled, nullptr, nullptr, row, 2);
    g.pointwise(CUDNN_POINTWISE_GEN_INDEX, scaled, nullptr, nullptr, col, 3);
    auto boolean = [&] { return g.temp(l.scores(), CUDNN_DATA_BOOLEAN); };
    cudnnBackendDescriptor_t row_in = boolean(), col_in = boolean(), inside = boolean(), causal = boolean(),
                             keep = boolean();
    g.pointwise(CUDNN_POINTWISE_CMP_LT, row, c.seq, nullptr, row_in, -1, CUDNN_DATA_BOOLEAN);
    g.pointwise(CUDNN_POINTWISE_CMP_LT, col, c.seq, nullptr, col_in, -1, CUDNN_DATA_BOOLEAN);
    g.pointwise(CUDNN_POINTWISE_LOGICAL_AND, row_in, col_in, nullptr, inside, -1, CUDNN_DATA_BOOLEAN);
    g.pointwise(CUDNN_POINTWISE_CMP_GE, row, col, nullptr, causal, -1, CUDNN_DATA_BOOLEAN);
    g.pointwise(CUDNN_POINTWISE_LOGICAL_AND, inside, causal, nullptr, keep, -1, CUDNN_DATA_BOOLEAN);
    cudnnBackendDescriptor_t masked = g.temp(l.scores());
    // y = t ? x : b: the score where kept, -inf elsewhere
    g.pointwise(CUDNN_POINTWISE_BINARY_SELECT, scaled, g.scalar(kNegInf), keep, masked);
    return masked;
  }

  // O = softmax(mask(scale Q K^T)) V, Stats = max + log(sum exp(s - max)) per row.
  static void forward_graph(GraphBuilder& g, const Layout& l) {
    const Common c = common(g, l);
    cudnnBackendDescriptor_t q = g.tensor(kQ, l.q_dims(), l.qkv_strides(), {CUDNN_DATA_BFLOAT16, false, false, c.rag_qkv});
    cudnnBackendDescriptor_t k_t =
        g.tensor(kK, l.kv_t_dims(), l.qkv_t_strides(), {CUDNN_DATA_BFLOAT16, false, false, c.rag_qkv});
    cudnnBackendDescriptor_t v = g.tensor(kV, l.kv_dims(), l.qkv_strides(), {CUDNN_DATA_BFLOAT16, false, false, c.rag_qkv});
    cudnnBackendDescriptor_t o = g.tensor(kO, l.q_dims(), l.o_strides(), {CUDNN_DATA_BFLOAT16, false, false, c.rag_o});
    cudnnBackendDescriptor_t stats =
        g.tensor(kStats, l.stats_dims(), l.stats_strides(), {CUDNN_DATA_FLOAT, false, false, c.rag_st});
    cudnnBackendDescriptor_t s = masked_scores(g, l, c, q, k_t);
    cudnnBackendDescriptor_t mx = g.temp(l.rows()), shifted = g.temp(l.scores()), e = g.temp(l.scores()),
                             sum = g.temp(l.rows()), log_sum = g.temp(l.rows());
    g.reduction(CUDNN_REDUCE_TENSOR_MAX, s, mx);
    g.pointwise(CUDNN_POINTWISE_SUB, s, mx, nullptr, shifted);
    g.pointwise(CUDNN_POINTWISE_EXP, shifted, nullptr, nullptr, e);
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, e, sum);
    g.pointwise(CUDNN_POINTWISE_LOG, sum, nullptr, nullptr, log_sum);
    g.pointwise(CUDNN_POINTWISE_ADD, mx, log_sum, nullptr, stats);
    cudnnBackendDescriptor_t p = g.temp(l.scores(), CUDNN_DATA_FLOAT, true);
    g.pointwise(CUDNN_POINTWISE_DIV, e, sum, nullptr, p);
    // The probabilities in bf16 for the second matmul, through the scale (1: no dropout) that
    // cuDNN's pattern puts there.
    cudnnBackendDescriptor_t p_io = g.temp(l.scores(), CUDNN_DATA_BFLOAT16);
    g.pointwise(CUDNN_POINTWISE_MUL, p, g.scalar(kOne), nullptr, p_io);
    g.matmul(p_io, v, o, c.seq, nullptr, c.seq);
  }

  // dV = P^T dO, dP = dO V^T, dS = P (dP - rowsum(dO O)) scale, dQ = dS K, dK = dS^T Q; with GQA
  // the per-query-head dK and dV are summed over each group (a reduction into KVH heads).
  static void backward_graph(GraphBuilder& g, const Layout& l) {
    const Common c = common(g, l);
    const GraphBuilder::TensorSpec bf16_qkv{CUDNN_DATA_BFLOAT16, false, false, c.rag_qkv},
        bf16_o{CUDNN_DATA_BFLOAT16, false, false, c.rag_o};
    cudnnBackendDescriptor_t q = g.tensor(kQ, l.q_dims(), l.qkv_strides(), bf16_qkv);
    cudnnBackendDescriptor_t k_t = g.tensor(kK, l.kv_t_dims(), l.qkv_t_strides(), bf16_qkv);
    cudnnBackendDescriptor_t v_t = g.tensor(kV, l.kv_t_dims(), l.qkv_t_strides(), bf16_qkv);
    cudnnBackendDescriptor_t o = g.tensor(kO, l.q_dims(), l.o_strides(), bf16_o);
    cudnnBackendDescriptor_t d_o = g.tensor(kDO, l.q_dims(), l.o_strides(), bf16_o);
    cudnnBackendDescriptor_t stats =
        g.tensor(kStats, l.stats_dims(), l.stats_strides(), {CUDNN_DATA_FLOAT, false, false, c.rag_st});
    cudnnBackendDescriptor_t dq = g.tensor(kDQ, l.q_dims(), l.qkv_strides(), bf16_qkv);
    cudnnBackendDescriptor_t dk = g.tensor(kDK, l.kv_dims(), l.qkv_strides(), bf16_qkv);
    cudnnBackendDescriptor_t dv = g.tensor(kDV, l.kv_dims(), l.qkv_strides(), bf16_qkv);
    // fp32 scratch in the statistics' and out's ragged layouts
    cudnnBackendDescriptor_t softmax_sum =
        g.tensor(kSoftmaxSum, l.stats_dims(), l.stats_strides(), {CUDNN_DATA_FLOAT, false, false, c.rag_st});
    cudnnBackendDescriptor_t dq_accum =
        g.tensor(kDQAccum, l.q_dims(), l.o_strides(), {CUDNN_DATA_FLOAT, false, false, c.rag_o, true});
    cudnnBackendDescriptor_t one = g.scalar(kOne);

    // rowsum(dO * O)
    cudnnBackendDescriptor_t prod = g.temp(l.q_dims()), rowsum = g.temp(l.rows());
    g.pointwise(CUDNN_POINTWISE_MUL, d_o, o, nullptr, prod);
    g.reduction(CUDNN_REDUCE_TENSOR_ADD, prod, rowsum);
    g.pointwise(CUDNN_POINTWISE_MUL, rowsum, one, nullptr, softmax_sum);
    // P = exp(mask(scale Q K^T) - stats), recomputed
    cudnnBackendDescriptor_t s = masked_scores(g, l, c, q, k_t);
    cudnnBackendDescriptor_t shifted = g.temp(l.scores()), p = g.temp(l.scores());
    g.pointwise(CUDNN_POINTWISE_SUB, s, stats, nullptr, shifted);
    g.pointwise(CUDNN_POINTWISE_EXP, shifted, nullptr, nullptr, p);
    cudnnBackendDescriptor_t p_io = g.temp(l.scores(), CUDNN_DATA_BFLOAT16, true);
    g.pointwise(CUDNN_POINTWISE_MUL, p, one, nullptr, p_io);
    // dV = P^T dO
    const Dims scores_t{l.B, l.H, l.S, l.S}, scores_t_strides{l.H * l.S * l.S, l.S * l.S, 1, l.S};
    cudnnBackendDescriptor_t p_t =
        g.tensor(g.virtual_uid(), scores_t, scores_t_strides, {CUDNN_DATA_BFLOAT16, true});
    g.reshape(p_io, p_t);
    const bool grouped = l.H != l.KVH;
    cudnnBackendDescriptor_t dv_full = grouped ? g.temp({l.B, l.H, l.S, l.D}) : dv;
    g.matmul(p_t, d_o, dv_full, c.seq, nullptr, c.seq);
    // dP = dO V^T, dS = P (dP - rowsum) scale
    cudnnBackendDescriptor_t dp = g.temp(l.scores()), centred = g.temp(l.scores()), ds_unscaled = g.temp(l.scores()),
                             ds = g.temp(l.scores());
    g.matmul(d_o, v_t, dp, c.seq, c.seq, nullptr);
    g.pointwise(CUDNN_POINTWISE_SUB, dp, softmax_sum, nullptr, centred);
    g.pointwise(CUDNN_POINTWISE_MUL, centred, p, nullptr, ds_unscaled);
    g.pointwise(CUDNN_POINTWISE_MUL, ds_unscaled, c.scale, nullptr, ds);
    // dQ = dS K (accumulated in fp32, then written as bf16)
    cudnnBackendDescriptor_t k = g.tensor(g.virtual_uid(), l.kv_dims(), l.qkv_strides(), {CUDNN_DATA_BFLOAT16, true});
    g.reshape(k_t, k);
    g.matmul(ds, k, dq_accum, c.seq, nullptr, c.seq);
    // dK = dS^T Q
    cudnnBackendDescriptor_t ds_t = g.tensor(g.virtual_uid(), scores_t, scores_t_strides, {CUDNN_DATA_FLOAT, true});
    g.reshape(ds, ds_t);
    cudnnBackendDescriptor_t dk_full = grouped ? g.temp({l.B, l.H, l.S, l.D}) : dk;
    g.matmul(ds_t, q, dk_full, c.seq, nullptr, c.seq);
    g.pointwise(CUDNN_POINTWISE_IDENTITY, dq_accum, nullptr, nullptr, dq);
    if (grouped) {
      g.reduction(CUDNN_REDUCE_TENSOR_ADD, dk_full, dk);
      g.reduction(CUDNN_REDUCE_TENSOR_ADD, dv_full, dv);
    }
  }

  // The cached plan of a shape, or a new one: the graph built, cuDNN's heuristics asked, the first
  // engine configuration that finalizes kept. None: an error naming the field.
  Plan& plan(bool backward, const Layout& l) {
    const PlanKey key{backward, l.B, l.S, int(l.H), int(l.KVH), int(l.D), int(l.ld)};
    if (auto it = plans.find(key); it != plans.end()) return it->second;
    Plan p;
    GraphBuilder g(p.ds);
    backward ? backward_graph(g, l) : forward_graph(g, l);
    // cuDNN 9 still reads the handle from the graph (and the plan); the attributes are marked
    // deprecated in favour of device-property descriptors that 9.19 does not require.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    cudnnBackendDescriptor_t graph = p.ds.make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
    set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, int64_t(g.ops().size()), g.ops().data());
    set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
    IFT_CUDNN_CHECK(cudnnBackendFinalize(graph));
    cudnnBackendDescriptor_t heur = p.ds.make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    const cudnnBackendHeurMode_t mode = CUDNN_HEUR_MODE_A;
    set_desc(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph);
    set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode);
    IFT_CUDNN_CHECK(cudnnBackendFinalize(heur));
    int64_t count = 0;
    IFT_CUDNN_CHECK(
        cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
    std::vector<cudnnBackendDescriptor_t> configs(size_t(std::max<int64_t>(count, 0)));
    for (auto& cfg : configs) cfg = p.ds.make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
    if (count > 0)
      IFT_CUDNN_CHECK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                               count, &count, configs.data()));
    std::string refused;
    for (int64_t i = 0; i < count && !p.plan; ++i) {
      cudnnBackendDescriptor_t candidate = p.ds.make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      set(candidate, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle);
      set_desc(candidate, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, configs[size_t(i)]);
      const cudnnStatus_t st = cudnnBackendFinalize(candidate);
      if (st == CUDNN_STATUS_SUCCESS) {
        p.plan = candidate;
      } else if (refused.empty()) {
        char last[512] = {};
        cudnnGetLastErrorString(last, sizeof last);
        refused = std::string(cudnnGetErrorString(st)) + ": " + last;
      }
    }
#pragma GCC diagnostic pop
    IFT_CHECK(p.plan, "attention: cudnn: cuDNN ", cudnnGetVersion(), " has no engine for the ",
              backward ? "backward" : "forward", " attention graph of ", l.B, " segments of up to ", l.S, " rows, ",
              l.H, " query and ", l.KVH, " key/value heads of ", l.D, " (", count, " configurations offered",
              refused.empty() ? std::string() : ", the first refused with " + refused, "); use attention: ift");
    IFT_CUDNN_CHECK(cudnnBackendGetAttribute(p.plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1,
                                             nullptr, &p.workspace));
    return plans.emplace(key, std::move(p)).first->second;
  }

  void execute(const Plan& p, void* workspace, std::vector<int64_t> uids, std::vector<void*> pointers) {
    Descriptors ds;
    cudnnBackendDescriptor_t pack = ds.make(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, int64_t(uids.size()), uids.data());
    set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, int64_t(pointers.size()), pointers.data());
    set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace);
    IFT_CUDNN_CHECK(cudnnBackendFinalize(pack));
    IFT_CUDNN_CHECK(cudnnBackendExecute(handle, p.plan, pack));
  }

  void check(const AttentionArgs& a) const {
    IFT_CHECK(a.N >= 1 && a.H >= 1 && a.KVH >= 1 && a.H % a.KVH == 0 && a.S >= 1 && a.S <= a.N && a.scale > 0,
              "attention: cudnn: bad shape (N ", a.N, ", H ", a.H, ", KVH ", a.KVH, ", S ", a.S, ")");
    IFT_CHECK(a.ld >= (a.H + 2 * a.KVH) * a.D, "attention: cudnn: row stride ", a.ld, " below (H + 2 KVH) D");
    IFT_CHECK(a.cu_seqlens_host, "attention: cudnn needs the host copy of cu_seqlens (AttentionArgs::cu_seqlens_host)");
    IFT_CHECK(a.cu_seqlens_host[0] == 0 && a.cu_seqlens_host[a.S] == a.N, "attention: cudnn: cu_seqlens must run from 0 to N = ", a.N);
    for (int s = 0; s < a.S; ++s)
      IFT_CHECK(a.cu_seqlens_host[s] < a.cu_seqlens_host[s + 1], "attention: cudnn: cu_seqlens is not increasing at ", s);
    const std::string why = cudnn_attention_unsupported(a);
    IFT_CHECK(why.empty(), "attention: cudnn does not take ", why, "; use attention: ift");
  }
};

// The library loaded at run time, not the headers built against: the GPU machine's cuDNN (often
// PyTorch's wheel) may be older. The packed (ragged) statistics need 9.6 (TransformerEngine gates its
// ragged Stats on it too); packed backward passes below sm_90 need 9.18.1.
CudnnAttention::CudnnAttention(cudaStream_t stream) : impl_(std::make_unique<Impl>()) {
  const size_t version = cudnnGetVersion();
  IFT_CHECK(version >= 90600, "attention: cudnn needs cuDNN 9.6 or later for packed samples (the library loaded is ",
            version, ")");
  int device = 0, major = 0;
  IFT_CUDA_CHECK(cudaGetDevice(&device));
  IFT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  IFT_CHECK(major >= 9 || version >= 91801, "attention: cudnn needs cuDNN 9.18.1 or later for packed samples on sm_",
            major, "x (the library loaded is ", version, ")");
  IFT_CUDNN_CHECK(cudnnCreate(&impl_->handle));
  IFT_CUDNN_CHECK(cudnnSetStream(impl_->handle, stream));
  impl_->stream = stream;
}
CudnnAttention::~CudnnAttention() = default;

void CudnnAttention::forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, const AttentionArgs& a) {
  Impl& m = *impl_;
  m.check(a);
  const Impl::Shape sh = Impl::shape_of(a);
  const Impl::Layout l{sh.B, sh.S, a.H, a.KVH, a.D, a.ld};
  const Plan& p = m.plan(false, l);
  const size_t ws = (size_t(p.workspace) + 255) / 256 * 256, meta = size_t(sh.B + 3 * (sh.B + 1)) * sizeof(int32_t);
  char* base = m.reserve(ws + meta);
  int32_t* dmeta = m.upload_meta(a, sh, base + ws);
  float scale = a.scale, neg_inf = -std::numeric_limits<float>::infinity(), one = 1.0f;
  auto* q = const_cast<__nv_bfloat16*>(qkv);
  m.execute(p, base,
            {kQ, kK, kV, kO, kStats, kScale, kNegInf, kOne, kSeqLen, kRaggedQkv, kRaggedO, kRaggedStats},
            {q, q + size_t(a.H) * a.D, q + size_t(a.H + a.KVH) * a.D, out, lse, &scale, &neg_inf, &one, dmeta,
             dmeta + sh.B, dmeta + 2 * sh.B + 1, dmeta + 3 * sh.B + 2});
}

void CudnnAttention::backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                              const __nv_bfloat16* out, const float* lse, const AttentionArgs& a) {
  Impl& m = *impl_;
  m.check(a);
  const Impl::Shape sh = Impl::shape_of(a);
  const Impl::Layout l{sh.B, sh.S, a.H, a.KVH, a.D, a.ld};
  const Plan& p = m.plan(true, l);
  const size_t ws = (size_t(p.workspace) + 255) / 256 * 256;
  const size_t sums = (size_t(a.N) * a.H * sizeof(float) + 255) / 256 * 256;
  const size_t accum = size_t(a.N) * a.H * a.D * sizeof(float);
  const size_t meta = size_t(sh.B + 3 * (sh.B + 1)) * sizeof(int32_t);
  char* base = m.reserve(ws + sums + accum + meta);
  float* softmax_sum = reinterpret_cast<float*>(base + ws);
  float* dq_accum = reinterpret_cast<float*>(base + ws + sums);
  IFT_CUDA_CHECK(cudaMemsetAsync(dq_accum, 0, accum, m.stream));
  int32_t* dmeta = m.upload_meta(a, sh, base + ws + sums + accum);
  float scale = a.scale, neg_inf = -std::numeric_limits<float>::infinity(), one = 1.0f;
  auto* q = const_cast<__nv_bfloat16*>(qkv);
  const size_t k_at = size_t(a.H) * a.D, v_at = size_t(a.H + a.KVH) * a.D;
  m.execute(p, base,
            {kQ, kK, kV, kO, kDO, kStats, kDQ, kDK, kDV, kSoftmaxSum, kDQAccum, kScale, kNegInf, kOne, kSeqLen,
             kRaggedQkv, kRaggedO, kRaggedStats},
            {q, q + k_at, q + v_at, const_cast<__nv_bfloat16*>(out), const_cast<__nv_bfloat16*>(dout),
             const_cast<float*>(lse), dqkv, dqkv + k_at, dqkv + v_at, softmax_sum, dq_accum, &scale, &neg_inf, &one,
             dmeta, dmeta + sh.B, dmeta + 2 * sh.B + 1, dmeta + 3 * sh.B + 2});
}

#endif  // IFT_HAVE_CUDNN

}  // namespace ift
