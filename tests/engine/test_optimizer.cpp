// AdamW: the fused update against PyTorch's formulation written out independently, clipping,
// per-tensor weight decay, and a non-finite gradient leaving everything untouched.
#include <cmath>

#include "engine/cpu/ops.h"
#include "engine/model.h"
#include "engine/optimizer.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

// torch.optim.AdamW's single-tensor loop, transcribed as its documentation states it.
void torch_adamw(std::vector<double>& p, const std::vector<double>& g, std::vector<double>& m, std::vector<double>& v,
                 int t, double lr, double b1, double b2, double eps, double wd) {
  for (size_t i = 0; i < p.size(); ++i) {
    p[i] *= 1 - lr * wd;
    m[i] = m[i] * b1 + (1 - b1) * g[i];
    v[i] = v[i] * b2 + (1 - b2) * g[i] * g[i];
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    const double denom = std::sqrt(v[i]) / std::sqrt(bc2) + eps;
    p[i] -= lr / bc1 * m[i] / denom;
  }
}

}  // namespace

TEST_CASE("adamw_update follows torch.optim.AdamW over several steps", "[optimizer]") {
  const int n = 97;
  std::vector<float> p = random_vector<float>(n, 1), m(n, 0.f), v(n, 0.f);
  std::vector<double> pd(p.begin(), p.end()), md(n, 0.0), vd(n, 0.0);
  for (int t = 1; t <= 5; ++t) {
    const std::vector<float> g = random_vector<float>(n, 100 + t, -2, 2);
    AdamWArgs s;  // no runs: every element decays
    s.lr = 1e-2f, s.beta1 = 0.9f, s.beta2 = 0.95f, s.eps = 1e-8f, s.weight_decay = 0.1f, s.t = t, s.n = n;
    cpu::adamw_update(p.data(), g.data(), m.data(), v.data(), s);
    torch_adamw(pd, std::vector<double>(g.begin(), g.end()), md, vd, t, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f);
  }
  require_close("params after 5 steps", p, pd, 1e-6, 1e-5);
  require_close("m", m, md, 1e-7, 1e-5);
  require_close("v", v, vd, 1e-7, 1e-5);
}

TEST_CASE("AdamW: clipping by global norm, no decay on norms and biases, non-finite skip", "[optimizer]") {
  const ModelConfig c = ModelConfig::from_json({{"model_type", "gpt2"}, {"vocab_size", 5}, {"n_embd", 4},
                                                {"n_layer", 1}, {"n_head", 2}, {"n_positions", 3}});
  CpuModel<float> model(c);
  const ParamLayout& layout = model.layout();
  std::fill(model.params().begin(), model.params().end(), 1.0f);
  const ParamView* bias = layout.find("transformer.h.0.attn.c_attn.bias");
  const ParamView* weight = layout.find("transformer.h.0.attn.c_attn.weight");
  REQUIRE(bias);
  REQUIRE(weight);

  AdamWConfig cfg;
  cfg.weight_decay = 0.5f;
  cfg.max_grad_norm = 1.0f;
  model.enable_optimizer(cfg);
  // Zero gradients: only decay moves parameters, and only the decayed ones.
  CHECK(model.step(0.1f) == 0.0);
  CHECK(model.params()[bias->offset] == 1.0f);
  CHECK(model.params()[weight->offset] == Approx(1.0f - 0.1f * 0.5f));
  CHECK(model.params()[layout.find("transformer.ln_f.weight")->offset] == 1.0f);

  // A gradient of norm 10 is clipped to 1: the first step's update is lr * sign(g) regardless of
  // scale, so check the moments instead (m = (1 - beta1) * g * scale).
  model.zero_grads();
  model.grads()[bias->offset] = 6.0f, model.grads()[bias->offset + 1] = 8.0f;
  const double norm = model.step(0.1f);
  CHECK(norm == Approx(10.0));
  CHECK(model.optimizer_state().m[bias->offset] == Approx((1 - 0.9) * 0.6).epsilon(1e-5));
  CHECK(model.steps() == 2);

  const std::vector<float> before = model.params_to_host();
  model.grads()[weight->offset] = NAN;
  CHECK_FALSE(std::isfinite(model.step(0.1f)));
  CHECK(model.params_to_host() == before);
  CHECK(model.steps() == 2);
}

TEST_CASE("decay runs: the flat buffer in order, merged where the flag repeats", "[optimizer]") {
  const ModelConfig c = ModelConfig::from_json({{"model_type", "llama"}, {"vocab_size", 8}, {"hidden_size", 4},
                                                {"num_hidden_layers", 2}, {"num_attention_heads", 2},
                                                {"intermediate_size", 6}});
  const ParamLayout layout = ParamLayout::build(c);
  AdamWConfig cfg;
  const DecayRuns runs = decay_runs(layout, cfg);
  // embed | norm1 | qkv o gate/up down | norm2 ... per layer | final norm | lm_head (untied)
  REQUIRE(runs.ends.size() == 2 + 4 * 2 + 1);
  CHECK(runs.ends.back() == static_cast<int64_t>(layout.total));
  for (size_t r = 0; r < runs.decays.size(); ++r) CHECK(runs.decays[r] == (r % 2 == 0));
  cfg.decay_embeddings = false;
  const DecayRuns no_embed = decay_runs(layout, cfg);
  CHECK(no_embed.decays.front() == 0);
  CHECK(no_embed.decays.back() == 0);
}

TEST_CASE("training a tiny model with AdamW lowers the loss", "[optimizer]") {
  const ModelConfig c = ModelConfig::from_json({{"model_type", "llama"}, {"vocab_size", 16}, {"hidden_size", 16},
                                                {"num_hidden_layers", 2}, {"num_attention_heads", 2},
                                                {"intermediate_size", 32}});
  CpuModel<float> model(c);
  model.init_random(3);
  model.enable_optimizer({});
  // Memorise one sequence: 0 1 2 ... 15 in a row of 16.
  std::vector<int32_t> tokens(16), targets(16), positions(16), cu = {0, 16};
  for (int i = 0; i < 16; ++i) tokens[i] = i, targets[i] = i < 15 ? i + 1 : -1, positions[i] = i;
  const BatchView b{16, tokens, targets, positions, cu};
  double first = 0, last = 0;
  for (int step = 0; step < 40; ++step) {
    model.zero_grads();
    last = model.forward(b, 15.0);
    if (step == 0) first = last;
    model.backward();
    model.step(1e-2f);
  }
  INFO("loss " << first << " -> " << last);
  CHECK(first == Approx(std::log(16.0)).epsilon(0.05));
  CHECK(last < 0.2 * first);
}
