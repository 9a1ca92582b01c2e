#include "engine/cpu/ops.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "engine/base/error.h"
#include "engine/cpu/blas.h"
#include "kernels/counter_hash.h"

namespace ift::cpu {

namespace {

// Threads pay only above a few tens of thousands of multiply-adds: below that, waking the team
// costs more than the loop (and tiny models, like the gradient checks', would spend their time in
// barriers).
bool parallel_pays(int64_t work) { return work >= (int64_t(1) << 15); }

// exp in the loops that dominate a step's non-GEMM time (softmax over the vocabulary and over
// attention rows, GELU's tanh, SiLU). libm's exp is a call, so a loop over it runs one value at a
// time; this one is branch-free and inline, so the loop vectorises. float: Cody-Waite reduction
// x = k ln2 + r and Cephes' degree-6 polynomial for exp(r), within 2 ulp of expf over the clamped
// range [-87, 88] (below -87 it gives about 1e-38 instead of a denormal: nothing a softmax sees).
// double keeps std::exp: it is what the finite-difference checks run.
inline float exp_fast(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  return y * std::bit_cast<float>((static_cast<int32_t>(k) + 127) << 23);
}
inline double exp_fast(double x) { return std::exp(x); }

// Per-thread scratch that outlives the call: OpenMP's threads persist, so once a shape has been seen
// the ops allocate nothing (a training step allocates nothing after the first). Slot tells apart
// the buffers one op needs at the same time.
template <class U, int Slot>
std::vector<U>& thread_scratch() {
  thread_local std::vector<U> v;
  return v;
}

// Reductions accumulate in double whatever T is: the reference should not be the noisy side.
template <class T>
double dot(const T* a, const T* b, int n) {
  double s = 0;
  for (int i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Reductions over rows or elements add fixed chunks, each in order, and then the chunks' sums in
// chunk order: the partition depends on the sizes alone, so any thread count gives the same bits.
constexpr int kRowChunk = 16;
constexpr int64_t kElementChunk = int64_t(1) << 14;
int chunks_of(int64_t n, int64_t chunk) { return static_cast<int>((n + chunk - 1) / chunk); }

// dw[c] += sum over chunks of part[chunk * C + c], in chunk order (and db likewise when given).
template <class T>
void add_chunk_sums(T* dw, const double* part, int chunks, int C, int stride) {
#pragma omp parallel for if (parallel_pays(int64_t(chunks) * C))
  for (int c = 0; c < C; ++c) {
    double s = 0;
    for (int i = 0; i < chunks; ++i) s += part[static_cast<size_t>(i) * stride + c];
    dw[c] += static_cast<T>(s);
  }
}

}  // namespace

// ---- embedding -------------------------------------------------------------------------------

template <class T>
void embedding_forward(T* out, const int32_t* tokens, const int32_t* positions, const T* wte, const T* wpe,
                       const EmbeddingArgs& args) {
  const int N = args.N, C = args.C, V = args.V, P = args.P;
  const T scale = static_cast<T>(args.scale);
  for (int n = 0; n < N; ++n) {
    IFT_CHECK(tokens[n] >= 0 && tokens[n] < V, "token id ", tokens[n], " at row ", n, " is outside the vocabulary [0, ",
              V, ")");
    IFT_CHECK(!wpe || (positions[n] >= 0 && positions[n] < P), "position ", positions[n], " at row ", n,
              " is outside the learned positions [0, ", P, ")");
  }
#pragma omp parallel for if (parallel_pays(int64_t(N) * C))
  for (int n = 0; n < N; ++n) {
    const T* e = wte + static_cast<int64_t>(tokens[n]) * C;
    T* o = out + static_cast<int64_t>(n) * C;
    if (wpe) {
      const T* p = wpe + static_cast<int64_t>(positions[n]) * C;
      for (int c = 0; c < C; ++c) o[c] = (e[c] + p[c]) * scale;
    } else if (scale != T(1)) {
      for (int c = 0; c < C; ++c) o[c] = e[c] * scale;
    } else {
      std::copy(e, e + C, o);
    }
  }
}

template <class T>
void embedding_backward(T* dwte, T* dwpe, const T* dout, const int32_t* tokens, const int32_t* positions,
                        const EmbeddingArgs& args) {
  const int N = args.N, C = args.C;
  const T scale = static_cast<T>(args.scale);
  // Rows are visited in order and channels split among threads: deterministic, no atomics.
#pragma omp parallel if (parallel_pays(int64_t(N) * C))
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int c0 = static_cast<int>(static_cast<int64_t>(C) * t / nt);
    const int c1 = static_cast<int>(static_cast<int64_t>(C) * (t + 1) / nt);
    for (int n = 0; n < N; ++n) {
      const T* d = dout + static_cast<int64_t>(n) * C;
      T* e = dwte + static_cast<int64_t>(tokens[n]) * C;
      // One rounding per term (a fused multiply-add), as the kernel does: bitwise equal to it.
      for (int c = c0; c < c1; ++c) e[c] = std::fma(d[c], scale, e[c]);
      if (dwpe) {
        T* p = dwpe + static_cast<int64_t>(positions[n]) * C;
        for (int c = c0; c < c1; ++c) p[c] = std::fma(d[c], scale, p[c]);
      }
    }
  }
}

// ---- norms ---------------------------------------------------------------------------------

template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* w, const T* b, const NormArgs& args) {
  const int N = args.N, C = args.C;
  const float eps = args.eps;
  const double off = args.weight_offset;
#pragma omp parallel for if (parallel_pays(int64_t(N) * C))
  for (int n = 0; n < N; ++n) {
    const T* xr = x + static_cast<int64_t>(n) * C;
    double m = 0;
    for (int c = 0; c < C; ++c) m += xr[c];
    m /= C;
    double v = 0;
    for (int c = 0; c < C; ++c) v += (xr[c] - m) * (xr[c] - m);
    v /= C;
    const double s = 1.0 / std::sqrt(v + eps);
    T* o = out + static_cast<int64_t>(n) * C;
    for (int c = 0; c < C; ++c) o[c] = static_cast<T>((xr[c] - m) * s * (w[c] + off) + b[c]);
    mean[n] = static_cast<T>(m);
    rstd[n] = static_cast<T>(s);
  }
}

template <class T>
void layernorm_backward(T* dx, T* dw, T* db, const T* dres, const T* dout, const T* x, const T* w, const T* mean,
                        const T* rstd, const NormArgs& args) {
  const int N = args.N, C = args.C;
  const double off = args.weight_offset;
  // Parameter gradients: per-chunk partial sums of dw (columns [0, C)) and db ([C, 2C)).
  const int chunks = chunks_of(N, kRowChunk);
  std::vector<double>& part = thread_scratch<double, 5>();
  part.assign(static_cast<size_t>(chunks) * 2 * C, 0.0);
#pragma omp parallel for schedule(static) if (parallel_pays(int64_t(N) * C))
  for (int chunk = 0; chunk < chunks; ++chunk) {
    double* r_dw = &part[static_cast<size_t>(chunk) * 2 * C];
    double* r_db = r_dw + C;
    for (int n = chunk * kRowChunk; n < std::min(N, (chunk + 1) * kRowChunk); ++n) {
      const T* xr = x + static_cast<int64_t>(n) * C;
      const T* d = dout + static_cast<int64_t>(n) * C;
      const double m = mean[n], s = rstd[n];
      double mean_dy = 0, mean_dy_xhat = 0;
      for (int c = 0; c < C; ++c) {
        const double xhat = (xr[c] - m) * s;
        const double dy = static_cast<double>(d[c]) * (w[c] + off);
        mean_dy += dy;
        mean_dy_xhat += dy * xhat;
        r_dw[c] += d[c] * xhat;
        r_db[c] += d[c];
      }
      mean_dy /= C;
      mean_dy_xhat /= C;
      T* o = dx + static_cast<int64_t>(n) * C;
      const T* r = dres ? dres + static_cast<int64_t>(n) * C : nullptr;
      for (int c = 0; c < C; ++c) {
        const double xhat = (xr[c] - m) * s;
        const double g = (static_cast<double>(d[c]) * (w[c] + off) - mean_dy - xhat * mean_dy_xhat) * s;
        o[c] = static_cast<T>((r ? static_cast<double>(r[c]) : 0.0) + g);
      }
    }
  }
  add_chunk_sums(dw, part.data(), chunks, C, 2 * C);
  add_chunk_sums(db, part.data() + C, chunks, C, 2 * C);
}

template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* w, const NormArgs& args) {
  const int N = args.N, C = args.C;
  const float eps = args.eps;
  const double off = args.weight_offset;
#pragma omp parallel for if (parallel_pays(int64_t(N) * C))
  for (int n = 0; n < N; ++n) {
    const T* xr = x + static_cast<int64_t>(n) * C;
    const double s = 1.0 / std::sqrt(dot(xr, xr, C) / C + eps);
    T* o = out + static_cast<int64_t>(n) * C;
    for (int c = 0; c < C; ++c) o[c] = static_cast<T>(xr[c] * s * (w[c] + off));
    rstd[n] = static_cast<T>(s);
  }
}

template <class T>
void rmsnorm_backward(T* dx, T* dw, const T* dres, const T* dout, const T* x, const T* w, const T* rstd,
                      const NormArgs& args) {
  const int N = args.N, C = args.C;
  const double off = args.weight_offset;
  const int chunks = chunks_of(N, kRowChunk);
  std::vector<double>& part = thread_scratch<double, 5>();
  part.assign(static_cast<size_t>(chunks) * C, 0.0);
#pragma omp parallel for schedule(static) if (parallel_pays(int64_t(N) * C))
  for (int chunk = 0; chunk < chunks; ++chunk) {
    double* r_dw = &part[static_cast<size_t>(chunk) * C];
    for (int n = chunk * kRowChunk; n < std::min(N, (chunk + 1) * kRowChunk); ++n) {
      const T* xr = x + static_cast<int64_t>(n) * C;
      const T* d = dout + static_cast<int64_t>(n) * C;
      const double s = rstd[n];
      double mean_dy_xhat = 0;
      for (int c = 0; c < C; ++c) {
        const double xhat = xr[c] * s;
        mean_dy_xhat += static_cast<double>(d[c]) * (w[c] + off) * xhat;
        r_dw[c] += d[c] * xhat;
      }
      mean_dy_xhat /= C;
      T* o = dx + static_cast<int64_t>(n) * C;
      const T* r = dres ? dres + static_cast<int64_t>(n) * C : nullptr;
      for (int c = 0; c < C; ++c) {
        const double g = (static_cast<double>(d[c]) * (w[c] + off) - xr[c] * s * mean_dy_xhat) * s;
        o[c] = static_cast<T>((r ? static_cast<double>(r[c]) : 0.0) + g);
      }
    }
  }
  add_chunk_sums(dw, part.data(), chunks, C, C);
}

// ---- matmul ----------------------------------------------------------------------------------

template <class T>
void matmul_forward(T* out, const T* inp, const T* w, const T* b, const MatmulArgs& a) {
  const int N = a.N, I = a.I, O = a.O;
  if (b) {
#pragma omp parallel for if (parallel_pays(int64_t(N) * O))
    for (int n = 0; n < N; ++n) std::copy(b, b + O, out + static_cast<int64_t>(n) * O);
  }
  gemm(false, true, N, O, I, T(1), inp, I, w, I, b ? T(1) : T(0), out, O);
}

template <class T>
void matmul_backward(T* dinp, T* dw, T* db, const T* dout, const T* inp, const T* w, const MatmulArgs& a) {
  const int N = a.N, I = a.I, O = a.O;
  if (dinp) gemm(false, false, N, I, O, T(1), dout, O, w, I, T(0), dinp, I);
  if (dw) gemm(true, false, O, I, N, T(1), dout, O, inp, I, T(1), dw, I);
  if (db) {
#pragma omp parallel for if (parallel_pays(int64_t(N) * O))
    for (int o = 0; o < O; ++o) {
      double s = 0;
      for (int n = 0; n < N; ++n) s += dout[static_cast<int64_t>(n) * O + o];
      db[o] += static_cast<T>(s);
    }
  }
}

// ---- attention -------------------------------------------------------------------------------

void check_cu_seqlens(const int32_t* cu, int S, int N) {
  IFT_CHECK(S >= 1, "cu_seqlens: at least one segment is needed");
  IFT_CHECK(cu[0] == 0, "cu_seqlens[0] must be 0, got ", cu[0]);
  IFT_CHECK(cu[S] == N, "cu_seqlens must end at the number of rows ", N, ", got ", cu[S]);
  for (int s = 0; s < S; ++s)
    IFT_CHECK(cu[s] < cu[s + 1], "cu_seqlens must increase strictly; segment ", s, " is [", cu[s], ", ", cu[s + 1], ")");
}

// Both passes work on one (segment, head) at a time in blocks of kQueryBlock query rows: the scores
// of a block against the keys it may see, (rows x keys), are the only quadratic buffer, so memory is
// O(kQueryBlock x segment length) per thread, and every product is a BLAS GEMM reading q, k, v in
// place through their row stride (no copies).
constexpr int kQueryBlock = 64;

template <class T>
void attention_forward(T* out, T* lse, const T* q, const T* k, const T* v, const AttentionArgs& a) {
  check_cu_seqlens(a.cu_seqlens, a.S, a.N);
  IFT_CHECK(a.KVH > 0 && a.H % a.KVH == 0, "attention: ", a.H, " query heads do not group over ", a.KVH, " kv heads");
  const int group = a.H / a.KVH, D = a.D, ldo = a.H * a.D;
#pragma omp parallel if (parallel_pays(int64_t(a.N) * a.N / a.S * a.H * a.D))
  {
    std::vector<T>& p = thread_scratch<T, 2>();
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int s = 0; s < a.S; ++s) {
      for (int h = 0; h < a.H; ++h) {
        const int begin = a.cu_seqlens[s], len = a.cu_seqlens[s + 1] - begin;
        const T* K = k + static_cast<int64_t>(begin) * a.ld + (h / group) * D;
        const T* V = v + static_cast<int64_t>(begin) * a.ld + (h / group) * D;
        for (int i0 = 0; i0 < len; i0 += kQueryBlock) {
          const int rows = std::min(kQueryBlock, len - i0), keys = i0 + rows;  // causal: keys [0, i0 + rows)
          p.resize(static_cast<size_t>(rows) * keys);
          gemm(false, true, rows, keys, D, static_cast<T>(a.scale),
               q + static_cast<int64_t>(begin + i0) * a.ld + h * D, a.ld, K, a.ld, T(0), p.data(), keys);
          for (int r = 0; r < rows; ++r) {
            T* row = &p[static_cast<size_t>(r) * keys];
            const int seen = i0 + r + 1;
            const T m = *std::max_element(row, row + seen);
            double sum = 0;
#pragma omp simd reduction(+ : sum)
            for (int j = 0; j < seen; ++j) sum += (row[j] = exp_fast(row[j] - m));
            const T inv = static_cast<T>(1.0 / sum);
            for (int j = 0; j < seen; ++j) row[j] *= inv;
            std::fill(row + seen, row + keys, T(0));
            lse[static_cast<int64_t>(begin + i0 + r) * a.H + h] = static_cast<T>(m + std::log(sum));
          }
          gemm(false, false, rows, D, keys, T(1), p.data(), keys, V, a.ld, T(0),
               out + static_cast<int64_t>(begin + i0) * ldo + h * D, ldo);
        }
      }
    }
  }
}

template <class T>
void attention_backward(T* dq, T* dk, T* dv, const T* dout, const T* q, const T* k, const T* v, const T* out,
                        const T* lse, const AttentionArgs& a) {
  check_cu_seqlens(a.cu_seqlens, a.S, a.N);
  const int group = a.H / a.KVH, D = a.D, ldo = a.H * a.D;
  // One (segment, kv head) pair owns the dk/dv rows of that head in that segment and the dq rows of
  // its query heads: pairs are independent, so no atomics and a deterministic result.
#pragma omp parallel if (parallel_pays(int64_t(a.N) * a.N / a.S * a.H * a.D))
  {
    std::vector<T>& p = thread_scratch<T, 2>();
    std::vector<T>& dp = thread_scratch<T, 3>();
    std::vector<double>& di = thread_scratch<double, 4>();
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int s = 0; s < a.S; ++s) {
      for (int kvh = 0; kvh < a.KVH; ++kvh) {
        const int begin = a.cu_seqlens[s], len = a.cu_seqlens[s + 1] - begin;
        const int64_t kv_at = static_cast<int64_t>(begin) * a.ld + kvh * D;
        const T *K = k + kv_at, *V = v + kv_at;
        T *dK = dk + kv_at, *dV = dv + kv_at;
        for (int j = 0; j < len; ++j) {
          std::fill_n(dK + static_cast<int64_t>(j) * a.ld, D, T(0));
          std::fill_n(dV + static_cast<int64_t>(j) * a.ld, D, T(0));
        }
        for (int h = kvh * group; h < (kvh + 1) * group; ++h) {
          for (int i0 = 0; i0 < len; i0 += kQueryBlock) {
            const int rows = std::min(kQueryBlock, len - i0), keys = i0 + rows;
            const T* Q = q + static_cast<int64_t>(begin + i0) * a.ld + h * D;
            const T* dO = dout + static_cast<int64_t>(begin + i0) * ldo + h * D;
            const T* O = out + static_cast<int64_t>(begin + i0) * ldo + h * D;
            p.resize(static_cast<size_t>(rows) * keys);
            dp.resize(p.size());
            di.resize(rows);
            // P = exp(scale q.k - lse), recomputed; D_i = dout_i . out_i.
            gemm(false, true, rows, keys, D, static_cast<T>(a.scale), Q, a.ld, K, a.ld, T(0), p.data(), keys);
            for (int r = 0; r < rows; ++r) {
              T* row = &p[static_cast<size_t>(r) * keys];
              const T l = lse[static_cast<int64_t>(begin + i0 + r) * a.H + h];
              const int seen = i0 + r + 1;
#pragma omp simd
              for (int j = 0; j < seen; ++j) row[j] = exp_fast(row[j] - l);
              std::fill(row + seen, row + keys, T(0));
              di[r] = dot(dO + static_cast<int64_t>(r) * ldo, O + static_cast<int64_t>(r) * ldo, D);
            }
            // dV += P^T dO;  dP = dO V^T;  dS = scale P (dP - D_i);  dQ = dS K;  dK += dS^T Q.
            gemm(true, false, keys, D, rows, T(1), p.data(), keys, dO, ldo, T(1), dV, a.ld);
            gemm(false, true, rows, keys, D, T(1), dO, ldo, V, a.ld, T(0), dp.data(), keys);
            for (int r = 0; r < rows; ++r) {
              T* ds = &dp[static_cast<size_t>(r) * keys];
              const T* pr = &p[static_cast<size_t>(r) * keys];
              const T d_i = static_cast<T>(di[r]), scale = static_cast<T>(a.scale);
              for (int j = 0; j < keys; ++j) ds[j] = scale * pr[j] * (ds[j] - d_i);
            }
            gemm(false, false, rows, D, keys, T(1), dp.data(), keys, K, a.ld, T(0),
                 dq + static_cast<int64_t>(begin + i0) * a.ld + h * D, a.ld);
            gemm(true, false, keys, D, rows, T(1), dp.data(), keys, Q, a.ld, T(1), dK, a.ld);
          }
        }
      }
    }
  }
}

template <class T>
void attention_cached(T* out, const T* q, const T* k_cache, const T* v_cache, const DecodeAttentionArgs& a) {
  const int n = a.n, start = a.start, H = a.H, D = a.D, ldq = a.ldq;
  const double scale = a.scale;
  const int group = H / a.KVH, ldkv = a.KVH * D;
#pragma omp parallel if (parallel_pays(int64_t(n) * (start + n) * H * D))
  {
    std::vector<double> p(start + n), acc(D);
#pragma omp for collapse(2)
    for (int i = 0; i < n; ++i) {
      for (int h = 0; h < H; ++h) {
        const T* qi = q + static_cast<int64_t>(i) * ldq + h * D;
        const int kvh = h / group, last = start + i;
        double m = -INFINITY, sum = 0;
        for (int j = 0; j <= last; ++j) {
          p[j] = scale * dot(qi, k_cache + static_cast<int64_t>(j) * ldkv + kvh * D, D);
          m = std::max(m, p[j]);
        }
        for (int j = 0; j <= last; ++j) sum += (p[j] = std::exp(p[j] - m));
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int j = 0; j <= last; ++j) {
          const T* vj = v_cache + static_cast<int64_t>(j) * ldkv + kvh * D;
          for (int d = 0; d < D; ++d) acc[d] += p[j] / sum * vj[d];
        }
        T* o = out + (static_cast<int64_t>(i) * H + h) * D;
        for (int d = 0; d < D; ++d) o[d] = static_cast<T>(acc[d]);
      }
    }
  }
}

// ---- RoPE ------------------------------------------------------------------------------------

void rope_table(float* table, const RopeArgs& a) {
  IFT_CHECK(a.P >= 0 && a.D >= 2 && a.D % 2 == 0, "rope_table: P = ", a.P, ", D = ", a.D, " (P >= 0, D even)");
  IFT_CHECK(a.theta > 0, "rope_table: theta must be > 0, got ", a.theta);
  const int half = a.D / 2;
  std::vector<double> inv_freq(half);
  for (int j = 0; j < half; ++j) inv_freq[j] = std::pow(static_cast<double>(a.theta), -2.0 * j / a.D);
#pragma omp parallel for if (parallel_pays(int64_t(a.P) * a.D * 8))
  for (int p = 0; p < a.P; ++p)
    for (int j = 0; j < half; ++j) {
      const double angle = p * inv_freq[j];
      table[static_cast<int64_t>(p) * a.D + j] = static_cast<float>(std::cos(angle));
      table[static_cast<int64_t>(p) * a.D + half + j] = static_cast<float>(std::sin(angle));
    }
}

namespace {

// Rotates each head's pair (j, j + D/2) by sign * angle; sign -1 is the inverse (the backward).
template <class T>
void rope_rotate(T* x, const int32_t* positions, const float* table, const RopeArgs& ra, double sign) {
  const int N = ra.N, heads = ra.heads, D = ra.D, ld = ra.ld, half = D / 2;
  for (int n = 0; n < N; ++n) {
    IFT_CHECK(positions[n] >= 0, "rope: position ", positions[n], " at row ", n, " is negative");
    IFT_CHECK(!table || positions[n] < ra.P, "rope: position ", positions[n], " at row ", n,
              " is outside the cos/sin table's [0, ", ra.P, ")");
  }
#pragma omp parallel if (parallel_pays(int64_t(N) * heads * D))
  {
    std::vector<double>& cs = thread_scratch<double, 0>();
    std::vector<double>& sn = thread_scratch<double, 1>();
    cs.resize(half), sn.resize(half);
#pragma omp for
    for (int n = 0; n < N; ++n) {
      const float* t = table ? table + static_cast<int64_t>(positions[n]) * D : nullptr;
      for (int j = 0; j < half; ++j) {
        if (t) {
          cs[j] = t[j], sn[j] = sign * t[half + j];
        } else {
          // HF computes inv_freq = 1 / theta^(2j/D) in fp32, then fp32 angles; in double here.
          const double angle = positions[n] * std::pow(static_cast<double>(ra.theta), -2.0 * j / D);
          cs[j] = std::cos(angle);
          sn[j] = sign * std::sin(angle);
        }
      }
      for (int h = 0; h < heads; ++h) {
        T* r = x + static_cast<int64_t>(n) * ld + h * D;
        for (int j = 0; j < half; ++j) {
          const double a = r[j], b = r[j + half];
          r[j] = static_cast<T>(a * cs[j] - b * sn[j]);
          r[j + half] = static_cast<T>(b * cs[j] + a * sn[j]);
        }
      }
    }
  }
}

}  // namespace

template <class T>
void rope_forward(T* x, const int32_t* positions, const float* table, const RopeArgs& a) {
  rope_rotate(x, positions, table, a, 1.0);
}

template <class T>
void rope_backward(T* dx, const int32_t* positions, const float* table, const RopeArgs& a) {
  rope_rotate(dx, positions, table, a, -1.0);
}

// ---- activations -----------------------------------------------------------------------------

namespace {
constexpr double kGeluScale = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluCube = 0.044715;
}  // namespace

// tanh through exp_fast, in T: 1 - 2 / (exp(2 y) + 1), exact at both ends, absolute error of a few
// ulp near 0, where GELU adds it to 1 anyway.
template <class T>
inline T tanh_fast(T y) {
  return T(1) - T(2) / (exp_fast(T(2) * y) + T(1));
}

template <class T>
void gelu_forward(T* out, const T* inp, int64_t n) {
#pragma omp parallel for simd if (parallel_pays(n))
  for (int64_t i = 0; i < n; ++i) {
    const T x = inp[i];
    const T t = tanh_fast(static_cast<T>(kGeluScale * (x + T(kGeluCube) * x * x * x)));
    out[i] = T(0.5) * x * (T(1) + t);
  }
}

template <class T>
void gelu_backward(T* dinp, const T* inp, const T* dout, int64_t n) {
#pragma omp parallel for simd if (parallel_pays(n))
  for (int64_t i = 0; i < n; ++i) {
    const T x = inp[i];
    const T t = tanh_fast(static_cast<T>(kGeluScale * (x + T(kGeluCube) * x * x * x)));
    const T dt = (T(1) - t * t) * static_cast<T>(kGeluScale) * (T(1) + T(3 * kGeluCube) * x * x);
    dinp[i] = dout[i] * (T(0.5) * (T(1) + t) + T(0.5) * x * dt);
  }
}

template <class T>
void glu_forward(T* out, const T* inp, const GluArgs& args) {
  const int N = args.N, F = args.F;
  const bool silu = args.act == GluActivation::silu;
#pragma omp parallel for if (parallel_pays(int64_t(N) * F))
  for (int n = 0; n < N; ++n) {
    const T* g = inp + static_cast<int64_t>(n) * 2 * F;
    const T* u = g + F;
    T* o = out + static_cast<int64_t>(n) * F;
    if (silu) {
#pragma omp simd
      for (int f = 0; f < F; ++f) {
        const T x = g[f];
        o[f] = x / (T(1) + exp_fast(-x)) * u[f];
      }
    } else {
#pragma omp simd
      for (int f = 0; f < F; ++f) {
        const T x = g[f];
        const T t = tanh_fast(static_cast<T>(kGeluScale * (x + T(kGeluCube) * x * x * x)));
        o[f] = T(0.5) * x * (T(1) + t) * u[f];
      }
    }
  }
}

template <class T>
void glu_backward(T* dinp, const T* inp, const T* dout, const GluArgs& args) {
  const int N = args.N, F = args.F;
  const bool silu = args.act == GluActivation::silu;
#pragma omp parallel for if (parallel_pays(int64_t(N) * F))
  for (int n = 0; n < N; ++n) {
    const T* g = inp + static_cast<int64_t>(n) * 2 * F;
    const T* u = g + F;
    const T* d = dout + static_cast<int64_t>(n) * F;
    T* dg = dinp + static_cast<int64_t>(n) * 2 * F;
    T* du = dg + F;
    if (silu) {
#pragma omp simd
      for (int f = 0; f < F; ++f) {
        const T x = g[f], sig = T(1) / (T(1) + exp_fast(-x));
        dg[f] = d[f] * u[f] * sig * (T(1) + x * (T(1) - sig));
        du[f] = d[f] * x * sig;
      }
    } else {
#pragma omp simd
      for (int f = 0; f < F; ++f) {
        const T x = g[f];
        const T t = tanh_fast(static_cast<T>(kGeluScale * (x + T(kGeluCube) * x * x * x)));
        const T dt = (T(1) - t * t) * static_cast<T>(kGeluScale) * (T(1) + T(3 * kGeluCube) * x * x);
        const T gelu = T(0.5) * x * (T(1) + t);
        dg[f] = d[f] * u[f] * (T(0.5) * (T(1) + t) + T(0.5) * x * dt);
        du[f] = d[f] * gelu;
      }
    }
  }
}

template <class T>
void residual_forward(T* out, const T* a, const T* b, int64_t n) {
#pragma omp parallel for if (parallel_pays(n))
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

// The scale is the fp32 1 / (1 - p) whatever T, so the float reference equals the kernel bit for
// bit and the double one (gradient checks) sees the same mask and factor.
template <class T>
void dropout(T* out, const T* in, const DropoutArgs& args) {
  IFT_CHECK(args.n >= 0, "dropout: negative element count n = ", args.n);
  IFT_CHECK(args.p >= 0.0f && args.p < 1.0f, "dropout: probability p = ", args.p, " is outside [0, 1)");
  const uint64_t key = counter_key(args.seed, args.step, args.site);
  const uint32_t threshold = dropout_threshold(args.p);
  const T scale = static_cast<T>(dropout_scale(args.p));
#pragma omp parallel for if (parallel_pays(args.n))
  for (int64_t i = 0; i < args.n; ++i)
    out[i] = counter_bits(key, static_cast<uint64_t>(i)) >= threshold ? in[i] * scale : T(0);
}

template <class T>
void nf4_dequantize(T* out, const uint8_t* codes, const float* absmax, const Nf4Args& args) {
  IFT_CHECK(args.n >= 0, "nf4_dequantize: negative element count n = ", args.n);
#pragma omp parallel for if (parallel_pays(args.n))
  for (int64_t i = 0; i < args.n; ++i) {
    const uint8_t byte = codes[i / 2];
    const int code = i % 2 ? byte & 0x0f : byte >> 4;
    out[i] = static_cast<T>(kNf4CodeBook[code] * absmax[i / kNf4Block]);
  }
}

// The fp32 scale and the fused multiply-add of the kernel, whatever T (double sees the same noise).
template <class T>
void neftune_forward(T* x, const int32_t* cu_seqlens, const NeftuneArgs& args) {
  IFT_CHECK(args.N > 0 && args.C > 0 && args.S > 0 && args.S <= args.N, "neftune_forward: bad shape N = ", args.N,
            ", C = ", args.C, ", S = ", args.S);
  IFT_CHECK(args.alpha >= 0 && std::isfinite(args.alpha), "neftune_forward: alpha = ", args.alpha,
            " must be finite and >= 0");
  check_cu_seqlens(cu_seqlens, args.S, args.N);
  const uint64_t key = counter_key(args.seed, args.step, kNeftuneSite);
  for (int s = 0; s < args.S; ++s) {
    const int length = cu_seqlens[s + 1] - cu_seqlens[s];
    const float scale = args.alpha / std::sqrt(static_cast<float>(length) * static_cast<float>(args.C));
#pragma omp parallel for if (parallel_pays(int64_t(length) * args.C))
    for (int n = cu_seqlens[s]; n < cu_seqlens[s + 1]; ++n)
      for (int c = 0; c < args.C; ++c) {
        const int64_t i = int64_t(n) * args.C + c;
        const float u = counter_uniform_pm1(counter_bits(key, static_cast<uint64_t>(i)));
        if constexpr (std::is_same_v<T, float>)
          x[i] = std::fma(scale, u, x[i]);
        else
          x[i] += static_cast<T>(scale) * static_cast<T>(u);
      }
  }
}

// ---- cross-entropy ---------------------------------------------------------------------------

template <class T>
double cross_entropy_forward(T* dlogits, const T* logits, const int32_t* targets, const CrossEntropyArgs& a) {
  const int N = a.N, V = a.V, ld = a.ld;
  const double normaliser = a.normaliser;
  IFT_CHECK(ld >= V, "cross-entropy: the row stride ", ld, " is smaller than the vocabulary ", V);
  for (int n = 0; n < N; ++n)
    IFT_CHECK(targets[n] < V, "target id ", targets[n], " at row ", n, " is outside the vocabulary [0, ", V, ")");
  IFT_CHECK(normaliser > 0, "cross-entropy: the loss normaliser must be positive, got ", normaliser);
  // Per-row losses, summed in row order afterwards (not an OpenMP reduction, whose order follows
  // the threads).
  std::vector<double>& losses = thread_scratch<double, 5>();
  losses.assign(N, 0.0);
#pragma omp parallel for if (parallel_pays(int64_t(N) * V))
  for (int n = 0; n < N; ++n) {
    const T* l = logits + static_cast<int64_t>(n) * ld;
    T* dl = dlogits ? dlogits + static_cast<int64_t>(n) * ld : nullptr;
    if (dl) std::fill(dl + V, dl + ld, T(0));  // the padding: a zero gradient, whatever it held
    const int t = targets[n];
    if (t < 0) {
      if (dl) std::fill(dl, dl + V, T(0));
      continue;
    }
    T m = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : m)
    for (int i = 0; i < V; ++i) m = l[i] > m ? l[i] : m;
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < V; ++i) sum += exp_fast(l[i] - m);
    const double lse = m + std::log(sum);
    losses[n] = lse - l[t];
    if (dl) {
      const double lt = l[t];  // read before an in-place write overwrites it
      const T lse_t = static_cast<T>(lse), inv = static_cast<T>(1.0 / normaliser);
#pragma omp simd
      for (int i = 0; i < V; ++i) dl[i] = exp_fast(l[i] - lse_t) * inv;
      dl[t] = static_cast<T>((std::exp(lt - lse) - 1.0) / normaliser);
    }
  }
  double total = 0;
  for (int n = 0; n < N; ++n) total += losses[n];
  return total / normaliser;
}

// ---- optimizer -------------------------------------------------------------------------------

template <class T>
double sum_of_squares(const T* g, int64_t n) {
  const int chunks = chunks_of(n, kElementChunk);
  std::vector<double>& part = thread_scratch<double, 5>();
  part.assign(chunks, 0.0);
#pragma omp parallel for if (parallel_pays(n))
  for (int chunk = 0; chunk < chunks; ++chunk) {
    double s = 0;
    const int64_t end = std::min(n, (chunk + 1) * kElementChunk);
    for (int64_t i = chunk * kElementChunk; i < end; ++i) s += static_cast<double>(g[i]) * g[i];
    part[chunk] = s;
  }
  double s = 0;
  for (double p : part) s += p;
  return s;
}

namespace {

// One run of AdamW with one weight decay.
template <class T>
void adamw_run(T* params, const T* grads, float* m, float* v, int64_t n, const AdamWArgs& s, float weight_decay) {
  const double c1 = 1.0 - std::pow(static_cast<double>(s.beta1), static_cast<double>(s.t));
  const double c2 = 1.0 - std::pow(static_cast<double>(s.beta2), static_cast<double>(s.t));
  const double decay = 1.0 - static_cast<double>(s.lr) * weight_decay;
#pragma omp parallel for if (parallel_pays(n))
  for (int64_t i = 0; i < n; ++i) {
    const double g = static_cast<double>(grads[i]) * s.grad_scale;
    const double mi = s.beta1 * static_cast<double>(m[i]) + (1.0 - s.beta1) * g;
    const double vi = s.beta2 * static_cast<double>(v[i]) + (1.0 - s.beta2) * g * g;
    m[i] = static_cast<float>(mi);
    v[i] = static_cast<float>(vi);
    params[i] = static_cast<T>(params[i] * decay - s.lr * (mi / c1) / (std::sqrt(vi / c2) + s.eps));
  }
}

}  // namespace

template <class T>
void adamw_update(T* params, const T* grads, float* m, float* v, const AdamWArgs& a) {
  IFT_CHECK(a.n >= 0 && a.runs >= 0, "adamw: n = ", a.n, " and runs = ", a.runs, " must not be negative");
  IFT_CHECK(a.runs == 0 || (a.run_ends && a.run_decays), "adamw: ", a.runs, " decay runs but null arrays");
  if (a.runs == 0) return adamw_run(params, grads, m, v, a.n, a, a.weight_decay);
  int64_t begin = 0;
  for (int r = 0; r < a.runs; ++r) {
    const int64_t end = a.run_ends[r];
    IFT_CHECK(end > begin && end <= a.n, "adamw: decay run ", r, " ends at ", end, " after ", begin, " (n = ", a.n,
              ")");
    const float wd = a.run_decays[r] ? a.weight_decay : 0.0f;
    adamw_run(params + begin, grads + begin, m + begin, v + begin, end - begin, a, wd);
    begin = end;
  }
  IFT_CHECK(begin == a.n, "adamw: the decay runs end at ", begin, ", not at n = ", a.n);
}

// ---- instantiations --------------------------------------------------------------------------

#define IFT_CPU_OPS(T)                                                                                          \
  template void embedding_forward<T>(T*, const int32_t*, const int32_t*, const T*, const T*, const EmbeddingArgs&); \
  template void embedding_backward<T>(T*, T*, const T*, const int32_t*, const int32_t*, const EmbeddingArgs&);   \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, const NormArgs&);                  \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, const T*,     \
                                      const NormArgs&);                                                           \
  template void rmsnorm_forward<T>(T*, T*, const T*, const T*, const NormArgs&);                                  \
  template void rmsnorm_backward<T>(T*, T*, const T*, const T*, const T*, const T*, const T*, const NormArgs&);   \
  template void matmul_forward<T>(T*, const T*, const T*, const T*, const MatmulArgs&);                         \
  template void matmul_backward<T>(T*, T*, T*, const T*, const T*, const T*, const MatmulArgs&);                \
  template void attention_forward<T>(T*, T*, const T*, const T*, const T*, const AttentionArgs&);              \
  template void attention_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, const T*,   \
                                      const AttentionArgs&);                                                   \
  template void attention_cached<T>(T*, const T*, const T*, const T*, const DecodeAttentionArgs&);               \
  template void rope_forward<T>(T*, const int32_t*, const float*, const RopeArgs&);                             \
  template void rope_backward<T>(T*, const int32_t*, const float*, const RopeArgs&);                            \
  template void gelu_forward<T>(T*, const T*, int64_t);                                                         \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t);                                              \
  template void glu_forward<T>(T*, const T*, const GluArgs&);                                                   \
  template void glu_backward<T>(T*, const T*, const T*, const GluArgs&);                                        \
  template void residual_forward<T>(T*, const T*, const T*, int64_t);                                           \
  template void dropout<T>(T*, const T*, const DropoutArgs&);                                                   \
  template void neftune_forward<T>(T*, const int32_t*, const NeftuneArgs&);                                     \
  template void nf4_dequantize<T>(T*, const uint8_t*, const float*, const Nf4Args&);                            \
  template double cross_entropy_forward<T>(T*, const T*, const int32_t*, const CrossEntropyArgs&);             \
  template double sum_of_squares<T>(const T*, int64_t);                                                         \
  template void adamw_update<T>(T*, const T*, float*, float*, const AdamWArgs&);

IFT_CPU_OPS(float)
IFT_CPU_OPS(double)

}  // namespace ift::cpu
