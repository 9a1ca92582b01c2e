// LoRA (engine/lora.h, engine/lora_path.h): finite-difference gradients of the adapters in double on
// both families (fused GPT-2 c_attn, Llama slices of qkv and gate/up), the frozen base (no gradient,
// no optimizer state, bitwise untouched by training), a zero B changing nothing, emu against cpu,
// and the config errors.
#include <cstring>
#include <numeric>
#include <random>

#include "engine/lora_files.h"
#include "engine/model.h"
#include "engine/weights.h"
#include "tests/engine/gradcheck.h"

using namespace ift;
using namespace ift::test;

namespace {

using bf16 = __nv_bfloat16;

ModelConfig tiny_gpt2() {
  return ModelConfig::from_json({{"model_type", "gpt2"}, {"vocab_size", 11}, {"n_embd", 8}, {"n_layer", 2},
                                 {"n_head", 2}, {"n_inner", 12}, {"n_positions", 16}});
}

ModelConfig tiny_llama() {  // GQA, untied, biases: every slice has its own offset
  return ModelConfig::from_json({{"model_type", "llama"}, {"vocab_size", 13}, {"hidden_size", 12},
                                 {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                                 {"head_dim", 4}, {"intermediate_size", 10}, {"rope_theta", 500.0},
                                 {"tie_word_embeddings", false}, {"attention_bias", true}, {"mlp_bias", true}});
}

LoraConfig lora(std::vector<std::string> targets, int r = 3, bool rslora = false) {
  LoraConfig l;
  l.r = r, l.alpha = 5, l.targets = std::move(targets), l.rslora = rslora;
  return l;
}

struct TestBatch {
  std::vector<int32_t> tokens, targets, positions, cu;
  BatchView view() const { return {static_cast<int>(tokens.size()), tokens, targets, positions, cu}; }
};

// Two segments (lengths 5 and 4) with one untrained target.
TestBatch batch(int V, uint64_t seed) {
  std::mt19937 rng(seed);
  TestBatch b;
  b.cu = {0, 5, 9};
  for (int i = 0; i < 9; ++i) b.tokens.push_back(static_cast<int32_t>(rng() % V));
  for (int s = 0; s < 2; ++s)
    for (int i = b.cu[s]; i < b.cu[s + 1]; ++i) {
      b.positions.push_back(i - b.cu[s]);
      b.targets.push_back(i + 1 < b.cu[s + 1] ? b.tokens[i + 1] : -1);
    }
  b.targets[2] = -1;
  return b;
}

template <class B>
const typename Optimizer<B>::Group& group(const Model<B>& m, const std::string& name) {
  for (const auto& g : m.optimizer().groups())
    if (g.layout.name == name) return g;
  FAIL("no group " << name);
  return m.optimizer().groups().front();
}

// With train_noise given (lora_dropout on, one fixed pass) the adapters see forward's masks, which
// every finite-difference forward draws again: the loss is a smooth function of the weights.
// h: the central-difference step (its truncation error grows as h^2 times the third derivative).
void check_lora_gradients(const ModelConfig& config, const LoraConfig& l, uint64_t seed,
                          const TrainNoise& train_noise = {}, double h = 1e-5) {
  INFO("seed " << seed << ", lora dropout " << (train_noise.lora_dropout ? l.dropout : 0.0));
  CpuModel<double> m(config, ModelOptions{false, l});
  m.init_random(seed, 0.4);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<double> noise(0.0, 0.3);
  for (double& w : m.params()) w += noise(rng);  // B non-zero, so every path carries gradient
  m.set_train_noise(train_noise);
  const auto& base = group(m, "base");
  const auto& adapters = group(m, "lora");
  CHECK(!base.layout.trainable);
  CHECK(base.grads.size() == 0);
  CHECK(adapters.layout.size == m.layout().total - m.layout().adapters.front().a);  // the adapters, gaps included
  const TestBatch b = batch(config.vocab_size, seed);
  const double norm = 4.0;
  CHECK(std::isfinite(m.forward(b.view(), norm)));
  m.backward();
  std::vector<double> analytic(m.layout().total, 0.0);
  for (const auto& r : adapters.layout.runs)
    std::copy(adapters.grads.data() + r.local, adapters.grads.data() + r.local + (r.end - r.begin),
              analytic.begin() + r.begin);
  REQUIRE(!m.layout().adapter_views.empty());
  for (const ParamView& v : m.layout().adapter_views) {
    std::vector<size_t> idx(v.numel());
    std::iota(idx.begin(), idx.end(), v.offset);
    check_gradient(v.name, m.params(), [&] { return m.forward(b.view(), norm); }, analytic, idx, h, 1e-8, 1e-5);
  }
}

}  // namespace

TEST_CASE("lora: adapter gradients match finite differences, GPT-2 (fused c_attn, both c_proj)", "[lora]") {
  check_lora_gradients(tiny_gpt2(), lora({"c_attn", "c_proj", "c_fc"}), 201);
}

TEST_CASE("lora: adapter gradients match finite differences, Llama every projection, rslora", "[lora]") {
  check_lora_gradients(tiny_llama(), lora({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
                                          2, true),
                       202);
}

TEST_CASE("lora: adapter gradients match finite differences, Llama slices k_proj and up_proj alone", "[lora]") {
  check_lora_gradients(tiny_llama(), lora({"k_proj", "up_proj"}, 3), 203);
}

// The layer-0 adapters' gradients also check the input gradient through layer 1's masks. h = 1e-6:
// the kept inputs scaled by 1 / (1 - p) curve the loss more, and at h = 1e-5 one element of the
// Llama case (layer 0 v_proj A[0, 11], gradient -1.81187e-4) misses rtol 1e-5 by truncation alone:
// its central difference is -0.982e-4, -1.80357e-4, -1.81178e-4 at h = 1e-4, 1e-5, 1e-6, the error
// falling 100x per 10x in h (h^2) towards the analytic value.
TEST_CASE("lora: adapter gradients match finite differences with adapter dropout on, GPT-2 and Llama", "[lora]") {
  TrainNoise noise;
  noise.seed = 23, noise.pass = 7, noise.lora_dropout = true;
  LoraConfig g = lora({"c_attn", "c_proj", "c_fc"});
  g.dropout = 0.3;
  check_lora_gradients(tiny_gpt2(), g, 204, noise, 1e-6);
  LoraConfig l = lora({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}, 2);
  l.dropout = 0.4;
  check_lora_gradients(tiny_llama(), l, 205, noise, 1e-6);
}

// PEFT's semantics: dropout on the adapters' inputs in training passes only. Off (evaluation, a
// pass without lora_dropout, decoding) or at p = 0 the model is bitwise the one without dropout.
TEST_CASE("lora: adapter dropout only in training passes, p = 0 and evaluation are bitwise no dropout", "[lora]") {
  const ModelConfig c = tiny_llama();
  LoraConfig l = lora({"q_proj", "v_proj", "o_proj", "down_proj"}, 3);
  CpuModel<float> clean(c, ModelOptions{false, l});
  l.dropout = 0.5;
  CpuModel<float> m(c, ModelOptions{false, l});
  clean.init_random(11, 0.4);
  std::vector<float> w = clean.params_to_host();
  std::mt19937_64 rng(12);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  for (size_t i = clean.layout().base_total; i < w.size(); ++i) w[i] += nd(rng);  // B non-zero
  clean.load_params(w), m.load_params(w);
  clean.enable_optimizer({}), m.enable_optimizer({});
  const TestBatch b = batch(c.vocab_size, 13);
  auto run = [&](CpuModel<float>& model, const TrainNoise& noise) {
    model.set_train_noise(noise);
    model.zero_grads();
    const double loss = model.forward(b.view(), 4.0);
    model.backward();
    return std::make_pair(loss, model.grads_to_host());
  };
  TrainNoise on;
  on.seed = 3, on.pass = 9, on.lora_dropout = true;
  const auto base = run(clean, {});
  CHECK(run(clean, on) == base);  // lora.dropout 0: the switch changes nothing
  CHECK(run(m, {}) == base);      // evaluation: no dropout
  TrainNoise other = on;
  other.lora_dropout = false;     // a training pass (other noise) without adapter dropout
  CHECK(run(m, other) == base);
  const auto dropped = run(m, on);
  CHECK(std::abs(dropped.first - base.first) > 1e-4);
  CHECK(run(m, on) == dropped);  // the same pass: the same masks
  other = on, other.pass = 10;
  CHECK(run(m, other).first != dropped.first);
  const std::vector<int32_t> prompt(b.tokens.begin(), b.tokens.begin() + 4);
  KVCache<CpuBackend<float>> c0 = clean.make_cache(6), c1 = m.make_cache(6);
  m.set_train_noise(on);
  CHECK(m.decode(prompt, c1) == clean.decode(prompt, c0));  // decoding never drops
}

TEST_CASE("lora: the layout names the adapters as PEFT does - B = 0 is the base model bitwise", "[lora]") {
  const ModelConfig c = tiny_llama();
  const LoraConfig l = lora({"v_proj", "down_proj"}, 4);
  CpuModel<float> m(c, ModelOptions{false, l});
  const ParamLayout& p = m.layout();
  REQUIRE(p.adapter_views.size() == 8);
  CHECK(p.adapter_views[0].name == "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight");
  CHECK(p.adapter_views[0].shape == std::vector<int64_t>{4, 12});
  CHECK(p.adapter_views[1].name == "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight");
  CHECK(p.adapter_views[1].shape == std::vector<int64_t>{8, 4});  // 2 kv heads x head_dim 4
  CHECK(p.adapters[0].col == 16 + 8);                              // v after q (16) and k (8)
  CHECK(p.adapter_views[3].name == "base_model.model.model.layers.0.mlp.down_proj.lora_B.weight");
  CHECK(p.lora_scale == 5.0 / 4);
  const ModelConfig g = tiny_gpt2();
  const ParamLayout pg = ParamLayout::build(g, lora({"c_proj"}, 2));
  REQUIRE(pg.adapter_views.size() == 8);  // attn.c_proj and mlp.c_proj of both layers
  CHECK(pg.adapter_views[0].name == "base_model.model.transformer.h.0.attn.c_proj.lora_A.weight");
  CHECK(pg.adapter_views[2].name == "base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight");
  CHECK(pg.adapter_views[2].shape == std::vector<int64_t>{2, 12});  // in_features = n_inner

  // Fresh adapters (PEFT's init: A random, B zero) leave the logits bitwise those of the base.
  m.init_random(7);
  std::vector<float> w = m.params_to_host();
  for (const LoraAdapter& a : p.adapters) CHECK(w[a.a] != 0.0f);
  CpuModel<float> base(c);
  base.load_params(std::vector<float>(w.begin(), w.begin() + base.layout().total));
  const TestBatch b = batch(c.vocab_size, 9);
  CHECK(m.forward(b.view(), 3.0) == base.forward(b.view(), 3.0));
  CHECK(m.logits_to_host() == base.logits_to_host());
}

TEST_CASE("lora: a bad block is an error naming the field - an unknown target lists the family's names", "[lora]") {
  const ModelConfig c = tiny_llama();
  auto message = [&](const LoraConfig& l) {
    try {
      l.check(c, "run.yaml: lora");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string unknown = message(lora({"q_proj", "c_attn"}));
  CHECK_THAT(unknown, Catch::Matchers::Contains("run.yaml: lora.targets: 'c_attn'"));
  CHECK_THAT(unknown, Catch::Matchers::Contains(
                          "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"));
  CHECK_THAT(message(lora({})), Catch::Matchers::Contains("lora.targets: empty"));
  LoraConfig d = lora({"q_proj"});
  d.dropout = 1.5;
  CHECK_THAT(message(d), Catch::Matchers::Contains("lora.dropout: must be in [0, 1)"));
  d.dropout = 0.05;
  CHECK(message(d).empty());
  LoraConfig q = lora({"q_proj"});
  q.quantize = "int3";
  CHECK_THAT(message(q), Catch::Matchers::Contains("lora.quantize: 'int3'"));
  const std::string gpt2 = [&] {
    try {
      lora({"q_proj"}).check(tiny_gpt2(), "lora");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }();
  CHECK_THAT(gpt2, Catch::Matchers::Contains("c_attn, c_proj, c_fc"));
}

namespace {

// Three AdamW steps of a LoRA model; returns the losses and checks the base stayed bitwise. With
// l.dropout > 0 every step is a training pass of its own (pass = step).
template <class B>
std::vector<double> train_lora(const ModelConfig& c, const LoraConfig& l) {
  Model<B> m(c, ModelOptions{false, l});
  m.init_random(5);
  m.enable_optimizer({});
  const std::vector<float> before = m.params_to_host();
  const std::vector<typename B::act_t> raw_before(m.params().begin(), m.params().end());
  const TestBatch b = batch(c.vocab_size, 4);
  std::vector<double> losses;
  for (int s = 0; s < 3; ++s) {
    TrainNoise noise;
    noise.seed = 31, noise.pass = uint64_t(s), noise.lora_dropout = true;
    m.set_train_noise(noise);
    m.zero_grads();
    losses.push_back(m.forward(b.view(), 7.0));
    m.backward();
    m.step(5e-2f);
  }
  const std::vector<typename B::act_t> raw_after(m.params().begin(), m.params().end());
  const size_t base = m.layout().base_total;
  CHECK(std::memcmp(raw_before.data(), raw_after.data(), base * sizeof(typename B::act_t)) == 0);
  const std::vector<float> after = m.params_to_host();
  CHECK(!std::equal(before.begin() + base, before.end(), after.begin() + base));  // the adapters moved
  const auto& frozen = group(m, "base");
  CHECK(frozen.m.size() == 0);
  CHECK(frozen.master.size() == 0);
  return losses;
}

}  // namespace

TEST_CASE("lora: training moves only the adapters, on cpu and emu fp32 / bf16", "[lora]") {
  for (const ModelConfig& c : {tiny_gpt2(), tiny_llama()}) {
    const LoraConfig l = c.model_type == "gpt2" ? lora({"c_attn", "c_fc"}, 2) : lora({"q_proj", "v_proj", "up_proj"}, 2);
    INFO(c.model_type);
    const std::vector<double> cpu = train_lora<CpuBackend<float>>(c, l);
    const std::vector<double> f32 = train_lora<EmuBackend<float>>(c, l);
    const std::vector<double> b16 = train_lora<EmuBackend<bf16>>(c, l);
    CHECK(cpu.back() < cpu.front());
    for (size_t s = 0; s < cpu.size(); ++s) {
      INFO("step " << s << ": cpu " << cpu[s] << ", emu fp32 " << f32[s] << ", emu bf16 " << b16[s]);
      CHECK(f32[s] == Approx(cpu[s]).epsilon(1e-5));
      CHECK(std::abs(b16[s] - cpu[s]) <= 2e-2 * cpu[0]);
    }
  }
}

// The masks are the counter hash of (seed, pass, site, element) on every backend, so emu trains
// like cpu with adapter dropout too (a mask that differed would move the loss by far more).
TEST_CASE("lora: with adapter dropout, emu fp32 / bf16 train like cpu", "[lora]") {
  for (const ModelConfig& c : {tiny_gpt2(), tiny_llama()}) {
    LoraConfig l = c.model_type == "gpt2" ? lora({"c_attn", "c_proj", "c_fc"}, 2)
                                          : lora({"q_proj", "k_proj", "o_proj", "up_proj", "down_proj"}, 2);
    const std::vector<double> clean = train_lora<CpuBackend<float>>(c, l);
    l.dropout = 0.5;
    INFO(c.model_type);
    const std::vector<double> cpu = train_lora<CpuBackend<float>>(c, l);
    const std::vector<double> f32 = train_lora<EmuBackend<float>>(c, l);
    const std::vector<double> b16 = train_lora<EmuBackend<bf16>>(c, l);
    CHECK(std::abs(cpu[1] - clean[1]) > 1e-3 * clean[1]);  // the dropout is applied
    for (size_t s = 0; s < cpu.size(); ++s) {
      INFO("step " << s << ": cpu " << cpu[s] << ", emu fp32 " << f32[s] << ", emu bf16 " << b16[s]);
      CHECK(f32[s] == Approx(cpu[s]).epsilon(1e-5));
      CHECK(std::abs(b16[s] - cpu[s]) <= 2e-2 * cpu[0]);
    }
  }
}

TEST_CASE("lora: PEFT adapters load - merging equals PEFT's merge_and_unload - a wrong base names the tensor",
          "[lora]") {
  for (const std::string name : {"lora_gpt2", "lora_llama", "lora_llama_rslora"}) {
    INFO(name);
    const auto dir = fixture("golden/" + name);
    const BaseWithAdapter m = load_base_with_adapter(dir, dir / "adapter");
    CHECK(m.layout.adapters.size() >= 4);
    const std::vector<float> merged = merge_lora(m.layout, m.flat);
    const ParamLayout base = ParamLayout::build(m.config);
    const std::vector<float> want = read_weights(dir / "merged.safetensors", base);
    for (const ParamView& v : base.views) {
      INFO(v.name);
      const std::vector<float> got(merged.begin() + v.offset, merged.begin() + v.offset + v.numel());
      const std::vector<float> ref(want.begin() + v.offset, want.begin() + v.offset + v.numel());
      require_close_to_max(v.name, got, ref, 1e-6);
    }
  }
  // The llama_gqa-shaped adapter on the smaller llama_tied-shaped base.
  const auto dir = fixture("golden/lora_llama_rslora");
  try {
    load_base_with_adapter(dir, fixture("golden/lora_llama/adapter"));
    FAIL("a mismatched adapter loaded");
  } catch (const Error& e) {
    CHECK_THAT(std::string(e.what()), Catch::Matchers::Contains("tensor 'base_model.model.model.layers.0."));
  }
}
