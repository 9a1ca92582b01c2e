// Test kernels for the tensor-core wrappers (kernels/mma.cuh): they move per-lane registers between
// global memory and the wrappers, so that tests/kernels/test_mma.cpp can check the layouts from the
// host, and they break one hardware requirement each for the fault tests. One warp a block unless
// a case says otherwise. Compiled over the emulator and, in the CUDA build, by nvcc.
#include "tests/kernels/mma_kernels.h"

#include "kernels/common.cuh"
#include "kernels/mma.cuh"

IFT_KERNELS_BEGIN
namespace mma_test {

// Every lane's registers in, mma, every lane's d out: a (32, 4), b (32, 2), c, d (32, 4).
static __global__ void mma_lanes_kernel(const uint32_t* g_a, const uint32_t* g_b, const float* g_c, float* g_d, int lanes) {
  const int lane = threadIdx.x;
  if (lane >= lanes) return;  // lanes < 32: a lane missing from the collective (a fault case)
  uint32_t a[4], b[2];
  float c[4], d[4];
  for (int i = 0; i < 4; ++i) a[i] = g_a[lane * 4 + i], c[i] = g_c[lane * 4 + i];
  for (int i = 0; i < 2; ++i) b[i] = g_b[lane * 2 + i];
  mma_m16n8k16_bf16(d, a, b, c);
  for (int i = 0; i < 4; ++i) g_d[lane * 4 + i] = d[i];
}

// The tile (rows of 8 bf16, `rows` of them) to shared memory, then ldmatrix of `variant` with lane l
// giving the address of row offsets[l] (in rows of 8 elements) plus `byte_shift` bytes; out (32, 4).
static __global__ void ldmatrix_lanes_kernel(const bf16* g_tile, int rows, const int* g_offsets, LdmatrixVariant variant,
                                             int byte_shift, bool from_global, uint32_t* g_out) {
  IFT_SHARED(bf16[64 * 8], s_tile);
  const int lane = threadIdx.x;
  for (int e = lane; e < rows * 8; e += 32) s_tile[e] = g_tile[e];
  __syncthreads();
  const unsigned char* base = from_global ? reinterpret_cast<const unsigned char*>(g_tile) : reinterpret_cast<const unsigned char*>(s_tile);
  const void* row = base + g_offsets[lane] * 16 + byte_shift;
  uint32_t r[4] = {0, 0, 0, 0};
  switch (variant) {
    case LdmatrixVariant::x1: { uint32_t x[1]; ldmatrix_x1(x, row); r[0] = x[0]; break; }
    case LdmatrixVariant::x2: { uint32_t x[2]; ldmatrix_x2(x, row); r[0] = x[0], r[1] = x[1]; break; }
    case LdmatrixVariant::x4: ldmatrix_x4(r, row); break;
    case LdmatrixVariant::x1_trans: { uint32_t x[1]; ldmatrix_x1_trans(x, row); r[0] = x[0]; break; }
    case LdmatrixVariant::x2_trans: { uint32_t x[2]; ldmatrix_x2_trans(x, row); r[0] = x[0], r[1] = x[1]; break; }
    case LdmatrixVariant::x4_trans: ldmatrix_x4_trans(r, row); break;
  }
  for (int i = 0; i < 4; ++i) g_out[lane * 4 + i] = r[i];
}

// The attention core on one 16-row tile with the FlashAttention-2 register flow: q (16, 16) and
// k (16, 16) row-major to shared, S = q k^T by ldmatrix.x4 (A) and ldmatrix.x2 of K (B) over two
// key tiles of 8; P = S packed to bf16 as the A fragment of P v, v (16, 8) by ldmatrix.x2.trans;
// out = P v (16, 8) fp32. s_out (16, 16): S as fp32, for the test.
static __global__ void attention_core_kernel(const bf16* g_q, const bf16* g_k, const bf16* g_v, float* g_s, float* g_o) {
  IFT_SHARED(bf16[16 * 16], s_q);
  IFT_SHARED(bf16[16 * 16], s_k);
  IFT_SHARED(bf16[16 * 8], s_v);
  const int lane = threadIdx.x, g = lane / 4, t = lane % 4;
  for (int e = lane; e < 256; e += 32) s_q[e] = g_q[e], s_k[e] = g_k[e];
  for (int e = lane; e < 128; e += 32) s_v[e] = g_v[e];
  __syncthreads();
  uint32_t a[4];
  ldmatrix_x4(a, s_q + (lane % 16) * 16 + 8 * (lane / 16));
  float s[2][4];
  for (int n = 0; n < 2; ++n) {  // keys 8n..8n+7
    uint32_t b[2];
    ldmatrix_x2(b, s_k + (8 * n + lane % 8) * 16 + 8 * ((lane / 8) % 2));
    const float zero[4] = {0, 0, 0, 0};
    mma_m16n8k16_bf16(s[n], a, b, zero);
  }
  for (int n = 0; n < 2; ++n)
    for (int i = 0; i < 4; ++i) g_s[(g + 8 * (i / 2)) * 16 + 8 * n + 2 * t + i % 2] = s[n][i];
  const uint32_t p[4] = {pack_bf16x2(s[0][0], s[0][1]), pack_bf16x2(s[0][2], s[0][3]), pack_bf16x2(s[1][0], s[1][1]),
                         pack_bf16x2(s[1][2], s[1][3])};
  uint32_t bv[2];
  ldmatrix_x2_trans(bv, s_v + (lane % 16) * 8);
  const float zero[4] = {0, 0, 0, 0};
  float o[4];
  mma_m16n8k16_bf16(o, p, bv, zero);
  for (int i = 0; i < 4; ++i) g_o[(g + 8 * (i / 2)) * 8 + 2 * t + i % 2] = o[i];
}

// cp.async of `blocks16` 16-byte pieces per thread into shared memory in two commit groups (the
// first half, the second half), read back at the step `mode` names; out (threads, blocks16 * 4)
// floats as read. Modes that break a rule are fault cases.
static __global__ void cp_async_kernel(const float* g_in, float* g_out, int mode) {
  IFT_DYNAMIC_SHARED(float, s_buf);  // (threads * 8) floats: two 16-byte pieces a thread
  const int tid = threadIdx.x;
  float* mine = s_buf + tid * 8;
  const float* src = g_in + tid * 8;
  const auto dump = [&](int slot) {
    for (int i = 0; i < 8; ++i) g_out[(slot * blockDim.x + tid) * 8 + i] = mine[i];
  };
  if (mode == 3) {  // misaligned shared destination
    cp_async_16(mine + 1, src, true);
    cp_async_commit();
    cp_async_wait<0>();
    return;
  }
  if (mode == 4) {  // destination in global memory
    cp_async_16(g_out + tid * 8, src, true);
    cp_async_commit();
    cp_async_wait<0>();
    return;
  }
  cp_async_16(mine, src, true);
  cp_async_commit();
  cp_async_16(mine + 4, src + 4, tid % 2 == 0);  // odd threads: zero-fill
  cp_async_commit();
  dump(0);               // before any wait: both pieces poisoned
  cp_async_wait<1>();
  dump(1);               // the first group landed, the second not
  if (mode == 2) return;  // exits with the second group pending
  cp_async_wait<0>();
  dump(2);
  if (mode == 1) {  // a neighbour's data through shared memory after a barrier
    __syncthreads();
    const float* other = s_buf + ((tid + 1) % blockDim.x) * 8;
    for (int i = 0; i < 8; ++i) g_out[(3 * blockDim.x + tid) * 8 + i] = other[i];
  }
}

void mma_lanes(const uint32_t* a, const uint32_t* b, const float* c, float* d, int threads, int lanes) {
  launch_kernel(mma_lanes_kernel, 1, threads, 0, nullptr, a, b, c, d, lanes);
}

void ldmatrix_lanes(const bf16* tile, int rows, const int* offsets, LdmatrixVariant variant, int byte_shift,
                    bool from_global, uint32_t* out) {
  launch_kernel(ldmatrix_lanes_kernel, 1, 32, 0, nullptr, tile, rows, offsets, variant, byte_shift, from_global, out);
}

void attention_core(const bf16* q, const bf16* k, const bf16* v, float* s, float* o) {
  launch_kernel(attention_core_kernel, 1, 32, 0, nullptr, q, k, v, s, o);
}

void cp_async_run(const float* in, float* out, int threads, int mode) {
  launch_kernel(cp_async_kernel, 1, threads, size_t(threads) * 8 * sizeof(float), nullptr, in, out, mode);
}

}  // namespace mma_test
IFT_KERNELS_END
