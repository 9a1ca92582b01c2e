// Every CPU reference op: forward against an independent naive formula where one exists, backward
// against finite differences in double precision, on awkward sizes.
#include <cmath>
#include <limits>

#include "engine/cpu/ops.h"
#include "engine/base/error.h"
#include "tests/engine/gradcheck.h"

using namespace ift;
using namespace ift::test;
using Vec = std::vector<double>;

TEST_CASE("embedding: rows of wte plus wpe, gradients scatter-add", "[cpu_ops]") {
  const int N = 6, C = 5, V = 7, P = 4;
  std::vector<int32_t> tokens = {3, 0, 3, 6, 1, 3}, pos = {0, 1, 2, 0, 1, 3};
  Vec wte = random_vector<double>(V * C, 1), wpe = random_vector<double>(P * C, 2), r = random_vector<double>(N * C, 3);
  Vec out(N * C);
  auto loss = [&] {
    cpu::embedding_forward(out.data(), tokens.data(), pos.data(), wte.data(), wpe.data(), EmbeddingArgs{N, C, V, P});
    return weighted_sum(out, r);
  };
  loss();
  CHECK(out[2 * C + 1] == wte[3 * C + 1] + wpe[2 * C + 1]);
  Vec dwte(V * C, 0.0), dwpe(P * C, 0.0);
  cpu::embedding_backward(dwte.data(), dwpe.data(), r.data(), tokens.data(), pos.data(), EmbeddingArgs{N, C});
  check_gradient("dwte", wte, loss, dwte);
  check_gradient("dwpe", wpe, loss, dwpe);

  tokens[4] = V;
  CHECK_THROWS_WITH(loss(), Catch::Contains("token id 7 at row 4"));
}

TEST_CASE("layernorm: normalised rows, backward with folded residual", "[cpu_ops]") {
  const int N = 5, C = 37;
  Vec x = random_vector<double>(N * C, 11, -2, 3), w = random_vector<double>(C, 12), b = random_vector<double>(C, 13);
  Vec r = random_vector<double>(N * C, 14), dres = random_vector<double>(N * C, 15);
  Vec out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), NormArgs{N, C, 1e-5f});
    return weighted_sum(out, r) + weighted_sum(x, dres);  // dres enters as the residual's own gradient
  };
  loss();
  for (int n = 0; n < N; ++n) {  // the normalised row has zero mean and unit variance before w, b
    double m = 0, v = 0;
    for (int c = 0; c < C; ++c) m += (out[n * C + c] - b[c]) / w[c];
    for (int c = 0; c < C; ++c) v += std::pow((out[n * C + c] - b[c]) / w[c], 2);
    CHECK(std::abs(m / C) < 1e-9);
    CHECK(std::abs(v / C - 1.0) < 1e-4);  // 1 - eps * rstd^2
  }
  Vec dx(N * C), dw(C, 0.0), db(C, 0.0);
  cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dres.data(), r.data(), x.data(), w.data(), mean.data(),
                          rstd.data(), NormArgs{N, C});
  check_gradient("dx", x, loss, dx);
  check_gradient("dw", w, loss, dw);
  check_gradient("db", b, loss, db);

  // dres may alias dx: the fused residual add of the model's backward.
  Vec inplace = dres;
  Vec dw2(C, 0.0), db2(C, 0.0);
  cpu::layernorm_backward(inplace.data(), dw2.data(), db2.data(), inplace.data(), r.data(), x.data(), w.data(),
                          mean.data(), rstd.data(), NormArgs{N, C});
  require_close("aliased dx", inplace, dx, 0, 0);
}

TEST_CASE("rmsnorm: forward formula and backward", "[cpu_ops]") {
  const int N = 4, C = 33;
  Vec x = random_vector<double>(N * C, 21, -2, 2), w = random_vector<double>(C, 22), r = random_vector<double>(N * C, 23);
  Vec out(N * C), rstd(N);
  const float eps = 1e-6f;
  auto loss = [&] {
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), NormArgs{N, C, eps});
    return weighted_sum(out, r);
  };
  loss();
  double ss = 0;
  for (int c = 0; c < C; ++c) ss += x[2 * C + c] * x[2 * C + c];
  CHECK(out[2 * C + 5] == Approx(w[5] * x[2 * C + 5] / std::sqrt(ss / C + eps)).epsilon(1e-12));
  Vec dx(N * C), dw(C, 0.0);
  cpu::rmsnorm_backward<double>(dx.data(), dw.data(), nullptr, r.data(), x.data(), w.data(), rstd.data(), NormArgs{N, C});
  check_gradient("dx", x, loss, dx);
  check_gradient("dw", w, loss, dw);
}

TEST_CASE("matmul: nn.Linear layout, bias, accumulated parameter gradients", "[cpu_ops]") {
  const int N = 7, I = 13, O = 5;
  Vec x = random_vector<double>(N * I, 31), w = random_vector<double>(O * I, 32), b = random_vector<double>(O, 33);
  Vec r = random_vector<double>(N * O, 34), out(N * O);
  auto loss = [&] {
    cpu::matmul_forward(out.data(), x.data(), w.data(), b.data(), {N, I, O});
    return weighted_sum(out, r);
  };
  loss();
  double y = b[3];
  for (int i = 0; i < I; ++i) y += x[4 * I + i] * w[3 * I + i];
  CHECK(out[4 * O + 3] == Approx(y).epsilon(1e-12));
  // Parameter gradients accumulate: start from a non-zero value and subtract it back.
  Vec dx(N * I), dw(O * I, 0.5), db(O, -0.25);
  cpu::matmul_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), {N, I, O});
  for (auto& g : dw) g -= 0.5;
  for (auto& g : db) g += 0.25;
  check_gradient("dx", x, loss, dx);
  check_gradient("dw", w, loss, dw);
  check_gradient("db", b, loss, db);
}

namespace {

// Attention the slow and obvious way: a full N x N score matrix per head, masked to causal within
// segments, softmax, weighted sum.
Vec naive_attention(const Vec& qkv, const std::vector<int32_t>& cu, int N, int H, int KVH, int D) {
  const int ld = (H + 2 * KVH) * D;
  std::vector<int> seg(N);
  for (size_t s = 0; s + 1 < cu.size(); ++s)
    for (int i = cu[s]; i < cu[s + 1]; ++i) seg[i] = static_cast<int>(s);
  Vec out(N * H * D, 0.0);
  for (int h = 0; h < H; ++h) {
    const int kvh = h / (H / KVH);
    for (int i = 0; i < N; ++i) {
      Vec p(N, 0.0);
      double m = -1e300, sum = 0;
      for (int j = 0; j < N; ++j) {
        if (j > i || seg[j] != seg[i]) continue;
        double s = 0;
        for (int d = 0; d < D; ++d) s += qkv[i * ld + h * D + d] * qkv[j * ld + (H + kvh) * D + d];
        p[j] = s / std::sqrt(double(D));
        m = std::max(m, p[j]);
      }
      for (int j = 0; j < N; ++j)
        if (j <= i && seg[j] == seg[i]) sum += (p[j] = std::exp(p[j] - m));
        else p[j] = 0;
      for (int j = 0; j < N; ++j)
        for (int d = 0; d < D; ++d) out[(i * H + h) * D + d] += p[j] / sum * qkv[j * ld + (H + KVH + kvh) * D + d];
    }
  }
  return out;
}

}  // namespace

TEST_CASE("attention: causal within packed segments, GQA, odd head dim", "[cpu_ops]") {
  struct Case { int H, KVH, D; std::vector<int32_t> cu; };
  auto c = GENERATE(Case{4, 2, 6, {0, 3, 4, 9}}, Case{3, 3, 5, {0, 1}}, Case{2, 1, 4, {0, 7}},
                    Case{6, 2, 3, {0, 2, 3, 4, 10}});
  const int N = c.cu.back(), ld = (c.H + 2 * c.KVH) * c.D;
  INFO("H=" << c.H << " KVH=" << c.KVH << " D=" << c.D << " N=" << N);
  Vec qkv = random_vector<double>(N * ld, 41, -1.5, 1.5), r = random_vector<double>(N * c.H * c.D, 42);
  AttentionArgs a;
  a.N = N, a.H = c.H, a.KVH = c.KVH, a.D = c.D, a.ld = ld, a.cu_seqlens = c.cu.data(), a.S = int(c.cu.size()) - 1;
  a.scale = float(1.0 / std::sqrt(double(c.D)));
  a.scale = 1.0f / std::sqrt(float(c.D));
  Vec out(N * c.H * c.D), lse(N * c.H);
  auto loss = [&] {
    cpu::attention_forward(out.data(), lse.data(), qkv.data(), qkv.data() + c.H * c.D,
                           qkv.data() + (c.H + c.KVH) * c.D, a);
    return weighted_sum(out, r);
  };
  loss();
  // The scale is a float in the shape (as in the kernels): compare with the naive version at that scale.
  const double scale_err = std::abs(double(a.scale) - 1.0 / std::sqrt(double(c.D)));
  require_close("out vs naive", out, naive_attention(qkv, c.cu, N, c.H, c.KVH, c.D), 1e-6 + 10 * scale_err, 1e-6);
  Vec dqkv(N * ld, 0.0);
  cpu::attention_backward(dqkv.data(), dqkv.data() + c.H * c.D, dqkv.data() + (c.H + c.KVH) * c.D, r.data(),
                          qkv.data(), qkv.data() + c.H * c.D, qkv.data() + (c.H + c.KVH) * c.D, out.data(), lse.data(),
                          a);
  check_gradient("dqkv", qkv, loss, dqkv);
}

TEST_CASE("attention: a segment of length 1 returns its own value - bad cu_seqlens are errors", "[cpu_ops]") {
  const int H = 2, KVH = 1, D = 3, ld = (H + 2 * KVH) * D;
  std::vector<int32_t> cu = {0, 2, 3};
  const int N = 3;
  std::vector<float> qkv = random_vector<float>(N * ld, 51), out(N * H * D), lse(N * H);
  AttentionArgs a;
  a.N = N, a.H = H, a.KVH = KVH, a.D = D, a.ld = ld, a.S = 2, a.cu_seqlens = cu.data(), a.scale = 0.5f;
  cpu::attention_forward(out.data(), lse.data(), qkv.data(), qkv.data() + H * D, qkv.data() + (H + KVH) * D, a);
  for (int h = 0; h < H; ++h)
    for (int d = 0; d < D; ++d) CHECK(out[(2 * H + h) * D + d] == qkv[2 * ld + (H + KVH) * D + d]);
  std::vector<int32_t> bad = {0, 2, 2, 3};
  a.cu_seqlens = bad.data(), a.S = 3;
  CHECK_THROWS_WITH(
      cpu::attention_forward(out.data(), lse.data(), qkv.data(), qkv.data() + H * D, qkv.data() + (H + KVH) * D, a),
      Catch::Contains("increase strictly"));
}

TEST_CASE("rope: rotate_half pairing, norm preserved, backward", "[cpu_ops]") {
  const int N = 5, heads = 3, D = 6, ld = 4 * D;  // a fourth head in each row stays untouched
  std::vector<int32_t> pos = {0, 1, 2, 0, 7};
  Vec x = random_vector<double>(N * ld, 61), r = random_vector<double>(N * ld, 62), y;
  RopeArgs ra;
  ra.N = N, ra.heads = heads, ra.D = D, ra.ld = ld, ra.theta = 500000.0f;
  auto loss = [&] {
    y = x;
    cpu::rope_forward(y.data(), pos.data(), nullptr, ra);  // exact angles, in double
    return weighted_sum(y, r);
  };
  loss();
  // position 0 is the identity; the untouched head is unchanged; pair (1, 4) of row 4 rotates by 7 * theta^(-2/6).
  for (int i = 0; i < ld; ++i) CHECK(y[i] == x[i]);
  for (int d = 3 * D; d < ld; ++d) CHECK(y[4 * ld + d] == x[4 * ld + d]);
  const double ang = 7 * std::pow(500000.0, -2.0 / 6);
  const double a = x[4 * ld + 1], b = x[4 * ld + 4];
  CHECK(y[4 * ld + 1] == Approx(a * std::cos(ang) - b * std::sin(ang)).epsilon(1e-12));
  CHECK(y[4 * ld + 4] == Approx(b * std::cos(ang) + a * std::sin(ang)).epsilon(1e-12));
  Vec dx = r;
  cpu::rope_backward(dx.data(), pos.data(), nullptr, ra);
  check_gradient("dx", x, loss, dx);
  // With the cos/sin table (what the backends run): the same rotation within its fp32 rounding,
  // and still exactly the backward of its own forward.
  ra.P = 8;
  std::vector<float> table(size_t(ra.P) * D);
  cpu::rope_table(table.data(), ra);
  loss();  // y: the exact rotation of x
  Vec yt = x;
  cpu::rope_forward(yt.data(), pos.data(), table.data(), ra);
  for (size_t i = 0; i < y.size(); ++i) CHECK(yt[i] == Approx(y[i]).margin(1e-6));
  auto table_loss = [&] {
    y = x;
    cpu::rope_forward(y.data(), pos.data(), table.data(), ra);
    return weighted_sum(y, r);
  };
  Vec dxt = r;
  cpu::rope_backward(dxt.data(), pos.data(), table.data(), ra);
  check_gradient("dx (table)", x, table_loss, dxt);
}

TEST_CASE("gelu (tanh) and swiglu: values and backward", "[cpu_ops]") {
  const int N = 3, F = 11;
  Vec x = random_vector<double>(N * 2 * F, 71, -4, 4), r = random_vector<double>(N * 2 * F, 72), y(N * 2 * F);
  auto gelu_loss = [&] {
    cpu::gelu_forward(y.data(), x.data(), int64_t(x.size()));
    return weighted_sum(y, r);
  };
  gelu_loss();
  CHECK(y[0] == Approx(0.5 * x[0] * (1 + std::tanh(std::sqrt(2 / M_PI) * (x[0] + 0.044715 * std::pow(x[0], 3))))));
  Vec dx(x.size());
  cpu::gelu_backward(dx.data(), x.data(), r.data(), int64_t(x.size()));
  check_gradient("gelu dx", x, gelu_loss, dx);

  Vec s(N * F), rs = random_vector<double>(N * F, 73);
  auto swiglu_loss = [&] {
    cpu::glu_forward(s.data(), x.data(), GluArgs{N, F});
    return weighted_sum(s, rs);
  };
  swiglu_loss();
  const double g = x[2 * 2 * F + 4], u = x[2 * 2 * F + F + 4];
  CHECK(s[2 * F + 4] == Approx(g / (1 + std::exp(-g)) * u).epsilon(1e-12));
  cpu::glu_backward(dx.data(), x.data(), rs.data(), GluArgs{N, F});
  check_gradient("swiglu dx", x, swiglu_loss, dx);

  // GeGLU (Gemma): the tanh GELU of the gate times up.
  const GluArgs geglu{N, F, GluActivation::gelu_tanh};
  auto geglu_loss = [&] {
    cpu::glu_forward(s.data(), x.data(), geglu);
    return weighted_sum(s, rs);
  };
  geglu_loss();
  CHECK(s[2 * F + 4] == Approx(0.5 * g * (1 + std::tanh(std::sqrt(2 / M_PI) * (g + 0.044715 * g * g * g))) * u)
                            .epsilon(1e-12));
  cpu::glu_backward(dx.data(), x.data(), rs.data(), geglu);
  check_gradient("geglu dx", x, geglu_loss, dx);
}

TEST_CASE("Gemma's ops: RMSNorm of x * (1 + w) and scaled embeddings", "[cpu_ops]") {
  const int N = 5, C = 19, V = 6;
  Vec x = random_vector<double>(N * C, 81, -2, 2), w = random_vector<double>(C, 82, -0.5, 0.5);
  Vec r = random_vector<double>(N * C, 83), out(N * C), rstd(N);
  const NormArgs args{N, C, 1e-6f, 1.0f};
  auto loss = [&] {
    cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), args);
    return weighted_sum(out, r);
  };
  loss();
  double ss = 0;
  for (int c = 0; c < C; ++c) ss += x[3 * C + c] * x[3 * C + c];
  CHECK(out[3 * C + 7] == Approx((1 + w[7]) * x[3 * C + 7] / std::sqrt(ss / C + 1e-6)).epsilon(1e-12));
  Vec dx(N * C), dw(C, 0.0);
  cpu::rmsnorm_backward<double>(dx.data(), dw.data(), nullptr, r.data(), x.data(), w.data(), rstd.data(), args);
  check_gradient("dx", x, loss, dx);
  check_gradient("dw", w, loss, dw);

  // A LayerNorm with the offset as well: the same (w + offset) in every term.
  Vec b = random_vector<double>(C, 84), mean(N);
  auto ln_loss = [&] {
    cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), args);
    return weighted_sum(out, r);
  };
  ln_loss();
  Vec ldx(N * C), ldw(C, 0.0), ldb(C, 0.0);
  cpu::layernorm_backward<double>(ldx.data(), ldw.data(), ldb.data(), nullptr, r.data(), x.data(), w.data(),
                                  mean.data(), rstd.data(), args);
  check_gradient("layernorm dx", x, ln_loss, ldx);
  check_gradient("layernorm dw", w, ln_loss, ldw);

  std::vector<int32_t> tokens = {2, 5, 2, 0, 1};
  Vec wte = random_vector<double>(V * C, 85), emb(N * C);
  const EmbeddingArgs eargs{N, C, V, 0, 4.358899f};  // sqrt(19) in fp32
  auto emb_loss = [&] {
    cpu::embedding_forward<double>(emb.data(), tokens.data(), nullptr, wte.data(), nullptr, eargs);
    return weighted_sum(emb, r);
  };
  emb_loss();
  CHECK(emb[1 * C + 3] == Approx(wte[5 * C + 3] * double(4.358899f)).epsilon(1e-15));
  Vec dwte(V * C, 0.0);
  cpu::embedding_backward<double>(dwte.data(), nullptr, r.data(), tokens.data(), nullptr, eargs);
  check_gradient("scaled dwte", wte, emb_loss, dwte);
}

TEST_CASE("cross-entropy: ignored targets, passed-in normaliser, in-place gradient", "[cpu_ops]") {
  const int N = 6, V = 29;
  std::vector<int32_t> targets = {3, -100, 28, 0, -1, 3};
  Vec logits = random_vector<double>(N * V, 81, -5, 5);
  const double norm = 7.0;  // e.g. the trained tokens of a whole accumulation step
  auto loss = [&] {
    return cpu::cross_entropy_forward<double>(nullptr, logits.data(), targets.data(), {N, V, V, norm});
  };
  double want = 0;
  for (int n = 0; n < N; ++n) {
    if (targets[n] < 0) continue;
    double sum = 0;
    for (int v = 0; v < V; ++v) sum += std::exp(logits[n * V + v]);
    want += std::log(sum) - logits[n * V + targets[n]];
  }
  CHECK(loss() == Approx(want / norm).epsilon(1e-12));
  Vec d(N * V);
  cpu::cross_entropy_forward(d.data(), logits.data(), targets.data(), {N, V, V, norm});
  check_gradient("dlogits", logits, loss, d);
  for (int v = 0; v < V; ++v) CHECK(d[1 * V + v] == 0.0);

  Vec inplace = logits;
  const double l2 = cpu::cross_entropy_forward(inplace.data(), inplace.data(), targets.data(), {N, V, V, norm});
  CHECK(l2 == Approx(want / norm).epsilon(1e-12));
  require_close("in-place dlogits", inplace, d, 0, 0);

  // Rows of stride ld > V (the padded classifier): the padding columns are not read (NaN there
  // changes nothing) and get a zero gradient, and the rest is bitwise the unpadded result.
  const int ld = V + 7;
  Vec padded(size_t(N) * ld, std::numeric_limits<double>::quiet_NaN());
  for (int n = 0; n < N; ++n)
    std::copy(logits.begin() + n * V, logits.begin() + (n + 1) * V, padded.begin() + size_t(n) * ld);
  const double l3 = cpu::cross_entropy_forward(padded.data(), padded.data(), targets.data(), {N, V, ld, norm});
  CHECK(l3 == l2);
  for (int n = 0; n < N; ++n) {
    for (int v = 0; v < V; ++v) REQUIRE(padded[size_t(n) * ld + v] == d[n * V + v]);
    for (int v = V; v < ld; ++v) REQUIRE(padded[size_t(n) * ld + v] == 0.0);
  }
  CHECK_THROWS_WITH(cpu::cross_entropy_forward<double>(nullptr, logits.data(), targets.data(), {N, V, V - 1, norm}),
                    Catch::Contains("row stride"));

  targets[0] = V;
  CHECK_THROWS_WITH(loss(), Catch::Contains("target id 29 at row 0"));
}
