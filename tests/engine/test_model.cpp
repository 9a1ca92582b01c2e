// The whole model: finite-difference gradients in double precision for tiny models of each family
// (GQA, untied head, biases, odd lengths, several samples packed in a row), and the packing
// invariant that samples sharing a row do not see each other.
#include <numeric>
#include <random>

#include "engine/model.h"
#include "tests/engine/gradcheck.h"

using namespace ift;
using namespace ift::test;

namespace {

ModelConfig tiny_gpt2() {
  return ModelConfig::from_json({{"model_type", "gpt2"}, {"vocab_size", 11}, {"n_embd", 8}, {"n_layer", 2},
                                 {"n_head", 2}, {"n_inner", 12}, {"n_positions", 16}});
}

ModelConfig tiny_llama(bool tied, int kv_heads, bool biases) {
  return ModelConfig::from_json({{"model_type", "llama"}, {"vocab_size", 13}, {"hidden_size", 12},
                                 {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                                 {"num_key_value_heads", kv_heads}, {"head_dim", 4}, {"intermediate_size", 10},
                                 {"rope_theta", 500.0}, {"tie_word_embeddings", tied}, {"attention_bias", biases},
                                 {"mlp_bias", biases}});
}

struct TestBatch {
  std::vector<int32_t> tokens, targets, positions, cu;
  BatchView view() const {
    return {static_cast<int>(tokens.size()), tokens, targets, positions, cu};
  }
};

// Two rows of 7 flattened: row 0 packs samples of lengths 3, 1, 3; row 1 holds one sample of 7.
// Targets are next tokens inside a sample, -1 across boundaries and on some "prompt" rows.
TestBatch packed_batch(int V, uint64_t seed) {
  std::mt19937 rng(seed);
  TestBatch b;
  b.cu = {0, 3, 4, 7, 14};
  for (int i = 0; i < 14; ++i) b.tokens.push_back(static_cast<int32_t>(rng() % V));
  for (size_t s = 0; s + 1 < b.cu.size(); ++s)
    for (int i = b.cu[s]; i < b.cu[s + 1]; ++i) {
      b.positions.push_back(i - b.cu[s]);
      b.targets.push_back(i + 1 < b.cu[s + 1] ? b.tokens[i + 1] : -1);
    }
  b.targets[7] = -1;  // a prompt token
  return b;
}

// Segment s of a packed batch as a batch of its own.
TestBatch segment_alone(const TestBatch& b, size_t s) {
  const int begin = b.cu[s], len = b.cu[s + 1] - b.cu[s];
  TestBatch one;
  one.tokens.assign(b.tokens.begin() + begin, b.tokens.begin() + begin + len);
  one.targets.assign(b.targets.begin() + begin, b.targets.begin() + begin + len);
  one.positions.assign(b.positions.begin() + begin, b.positions.begin() + begin + len);
  one.cu = {0, len};
  return one;
}

// Random weights everywhere (norm weights near 1, biases non-zero) so no gradient is trivially zero.
void randomise(CpuModel<double>& m, uint64_t seed) {
  m.init_random(seed, 0.4);
  std::mt19937_64 rng(seed + 1);
  std::normal_distribution<double> noise(0.0, 0.2);
  for (double& w : m.params()) w += noise(rng);
}

void check_model_gradients(const ModelConfig& config, uint64_t seed, const TrainNoise& noise = {}) {
  CpuModel<double> m(config);
  randomise(m, seed);
  m.set_train_noise(noise);
  const TestBatch b = packed_batch(config.vocab_size, seed);
  const double norm = 5.0;
  const double loss = m.forward(b.view(), norm);
  CHECK(std::isfinite(loss));
  CHECK(loss > 0.1);
  m.backward();
  const std::vector<double> analytic(m.grads().begin(), m.grads().end());
  for (const ParamView& v : m.layout().views) {
    // Each Hugging Face tensor separately, so a failure names the tensor.
    std::vector<size_t> idx(v.numel());
    std::iota(idx.begin(), idx.end(), v.offset);
    check_gradient(v.name, m.params(), [&] { return m.forward(b.view(), norm); }, analytic, idx, 1e-5, 1e-8, 1e-5);
  }
}

}  // namespace

TEST_CASE("model gradients match finite differences: GPT-2", "[model]") {
  check_model_gradients(tiny_gpt2(), 101);
}

TEST_CASE("model gradients match finite differences: Llama GQA untied with biases", "[model]") {
  check_model_gradients(tiny_llama(false, 2, true), 102);
}

TEST_CASE("model gradients match finite differences: Llama tied, multi-head", "[model]") {
  check_model_gradients(tiny_llama(true, 4, false), 103);
}

// With the noise of one pass fixed, the loss is a smooth function of the weights: the backward pass
// through residual dropout (forward's masks, regenerated) and NEFTune (additive) must match it.
TEST_CASE("model gradients match finite differences with residual dropout and NEFTune on", "[model]") {
  TrainNoise noise;
  noise.seed = 17, noise.pass = 5, noise.residual_dropout = {0.2f, 0.5f}, noise.neftune_alpha = 5.0f;
  check_model_gradients(tiny_gpt2(), 104, noise);
  check_model_gradients(tiny_llama(false, 2, true), 105, noise);
}

TEST_CASE("model: training noise changes the loss, is the same for the same pass, off when unset and in decode",
          "[model]") {
  const ModelConfig config = tiny_llama(false, 2, true);
  CpuModel<float> m(config);
  m.init_random(3, 0.4);
  const TestBatch b = packed_batch(config.vocab_size, 4);
  const double clean = m.forward(b.view(), 5.0);
  const std::vector<float> clean_logits = m.logits();
  const std::vector<int32_t> prompt(b.tokens.begin(), b.tokens.begin() + 5);
  KVCache<CpuBackend<float>> cache0 = m.make_cache(8);
  const std::vector<float> clean_decode = m.decode(prompt, cache0);

  TrainNoise zero;  // probabilities 0 and alpha 0: the identity, bit for bit
  zero.seed = 1, zero.pass = 1, zero.residual_dropout = {0.0f, 0.0f};
  m.set_train_noise(zero);
  CHECK(m.forward(b.view(), 5.0) == clean);

  for (int which = 0; which < 2; ++which) {
    TrainNoise noise;
    noise.seed = 1, noise.pass = 1;
    if (which == 0) noise.residual_dropout = {0.1f, 0.3f};
    else noise.neftune_alpha = 15.0f;
    INFO((which == 0 ? "residual dropout" : "NEFTune"));
    m.set_train_noise(noise);
    const double noisy = m.forward(b.view(), 5.0);
    CHECK(std::abs(noisy - clean) > 1e-4);
    CHECK(m.forward(b.view(), 5.0) == noisy);  // the same pass: the same draws
    noise.pass = 2;
    m.set_train_noise(noise);
    CHECK(m.forward(b.view(), 5.0) != noisy);
    KVCache<CpuBackend<float>> cache = m.make_cache(8);
    CHECK(m.decode(prompt, cache) == clean_decode);  // generation never sees training noise
    m.set_train_noise({});                           // evaluation: off
    CHECK(m.forward(b.view(), 5.0) == clean);
    CHECK(m.logits() == clean_logits);
  }
  TrainNoise bad;
  bad.residual_dropout = {0.1f};
  CHECK_THROWS_WITH(m.set_train_noise(bad), Catch::Contains("1 probabilities for 2 layers"));
  bad.residual_dropout = {0.1f, 1.0f};
  CHECK_THROWS_WITH(m.set_train_noise(bad), Catch::Contains("probability 1 is outside [0, 1)"));
}

// Per-sequence averaging through segment weights: sum over segments of w_s * (token losses) / norm,
// with w_s = 1 / trained tokens and norm = the segments with any, is the mean over samples of each
// sample run alone with its own per-token mean; its gradient matches finite differences.
TEST_CASE("model: segment weights average per sequence, and their gradient is right", "[model]") {
  const ModelConfig config = tiny_llama(false, 2, true);
  CpuModel<double> m(config);
  randomise(m, 21);
  const TestBatch b = packed_batch(config.vocab_size, 22);
  std::vector<float> w;
  double sequences = 0, expected = 0;
  for (size_t s = 0; s + 1 < b.cu.size(); ++s) {
    const TestBatch one = segment_alone(b, s);
    const int64_t n = one.view().trained_tokens();
    w.push_back(n > 0 ? 1.0f / float(n) : 0.0f);
    if (n > 0) sequences += 1, expected += m.forward(one.view(), double(n));
  }
  REQUIRE(sequences == 3);  // the sample of length 1 has no target
  BatchView v = b.view();
  v.segment_weights = w;
  const double got = m.forward(v, sequences);
  CHECK(got == Approx(expected / sequences).epsilon(1e-6));  // 1/n rounded to float: ~1e-7 relative
  CHECK(std::abs(got - m.forward(b.view(), double(b.view().trained_tokens()))) > 1e-3);  // not per token
  m.forward(v, sequences);
  m.backward();
  const std::vector<double> analytic(m.grads().begin(), m.grads().end());
  for (const ParamView& pv : m.layout().views) {
    std::vector<size_t> idx(pv.numel());
    std::iota(idx.begin(), idx.end(), pv.offset);
    check_gradient(pv.name, m.params(), [&] { return m.forward(v, sequences); }, analytic, idx, 1e-5, 1e-8, 1e-5);
  }
  std::vector<float> bad(2, 1.0f);
  v.segment_weights = bad;
  CHECK_THROWS_WITH(m.forward(v, 1.0), Catch::Contains("2 segment weights for 4 segments"));
}

TEST_CASE("model: packed samples equal the same samples run alone", "[model]") {
  for (const ModelConfig& config : {tiny_gpt2(), tiny_llama(false, 2, true)}) {
    CpuModel<double> m(config);
    randomise(m, 7);
    const TestBatch b = packed_batch(config.vocab_size, 8);
    const double packed = m.forward(b.view(), 1.0);
    const std::vector<double> packed_logits = m.logits();
    double separate = 0;
    for (size_t s = 0; s + 1 < b.cu.size(); ++s) {
      const int begin = b.cu[s], len = b.cu[s + 1] - b.cu[s];
      const TestBatch one = segment_alone(b, s);
      separate += m.forward(one.view(), 1.0);
      const std::vector<double> want(packed_logits.begin() + begin * config.vocab_size,
                                     packed_logits.begin() + (begin + len) * config.vocab_size);
      require_close("logits of sample " + std::to_string(s), m.logits(), want, 1e-12, 1e-12);
    }
    CHECK(packed == Approx(separate).epsilon(1e-12));
  }
}

TEST_CASE("model: fp32 and fp64 agree - gradients accumulate across backward calls", "[model]") {
  const ModelConfig config = tiny_llama(false, 2, false);
  CpuModel<double> md(config);
  randomise(md, 9);
  CpuModel<float> mf(config);
  for (size_t i = 0; i < md.params().size(); ++i) mf.params()[i] = static_cast<float>(md.params()[i]);
  const TestBatch b = packed_batch(config.vocab_size, 10);
  const double n = static_cast<double>(b.view().trained_tokens());
  const double ld = md.forward(b.view(), n);
  md.backward();
  const double lf = mf.forward(b.view(), n);
  mf.backward();
  CHECK(lf == Approx(ld).epsilon(1e-5));
  require_close_to_max("fp32 grads", mf.grads(), md.grads(), 1e-4);
  mf.forward(b.view(), n);
  mf.backward();
  std::vector<double> twice(md.grads().size());
  for (size_t i = 0; i < twice.size(); ++i) twice[i] = 2 * md.grads()[i];
  require_close_to_max("grads after two backward calls", mf.grads(), twice, 1e-4);
}

TEST_CASE("config: the families' biases and names are derived - what ift lacks is an error naming the field",
          "[model]") {
  const nlohmann::json base = {{"vocab_size", 13}, {"hidden_size", 12}, {"num_hidden_layers", 1},
                               {"num_attention_heads", 2}, {"intermediate_size", 20}};
  auto with = [&](const std::string& type, nlohmann::json extra = nlohmann::json::object()) {
    nlohmann::json j = base;
    j["model_type"] = type;
    j.update(extra);
    return ModelConfig::from_json(j, "config.json");
  };
  const ModelConfig qwen = with("qwen2");
  CHECK((qwen.qkv_bias && !qwen.o_bias && !qwen.mlp_bias));
  const ParamLayout ql = ParamLayout::build(qwen);
  CHECK(ql.find("model.layers.0.self_attn.q_proj.bias"));
  CHECK_FALSE(ql.find("model.layers.0.self_attn.o_proj.bias"));  // a Qwen2 checkpoint has none
  const ModelConfig llama = with("llama", {{"attention_bias", true}});
  CHECK((llama.qkv_bias && llama.o_bias && !llama.mlp_bias));
  const ModelConfig phi = with("phi3");
  CHECK(ParamLayout::build(phi).find("model.layers.0.self_attn.qkv_proj.weight"));
  CHECK(ParamLayout::build(phi).find("model.layers.0.mlp.gate_up_proj.weight"));
  CHECK_FALSE(ParamLayout::build(phi).find("model.layers.0.self_attn.q_proj.weight"));
  // Round trip: to_json names a model_type that builds the same biases and tensor names.
  for (const ModelConfig& c : {qwen, llama, phi, with("mistral")}) {
    const ModelConfig back = ModelConfig::from_json(c.to_json());
    CHECK(back.model_type == c.model_type);
    CHECK((back.qkv_bias == c.qkv_bias && back.o_bias == c.o_bias && back.mlp_bias == c.mlp_bias));
    CHECK(ParamLayout::build(back).views.size() == ParamLayout::build(c).views.size());
  }
  // Every storage tensor starts on the alignment boundary.
  for (const StorageTensor& t : ql.storage) CHECK(t.offset % kAlignElements == 0);
  CHECK(ql.parameters < ql.total);

  CHECK_THROWS_WITH(with("llama", {{"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}}),
                    Catch::Contains("config.json: field 'rope_scaling' is not supported"));
  CHECK_THROWS_WITH(with("phi3", {{"partial_rotary_factor", 0.5}}), Catch::Contains("'partial_rotary_factor'"));
  CHECK_THROWS_WITH(with("qwen2", {{"attention_bias", true}}), Catch::Contains("field 'attention_bias'"));
  CHECK_THROWS_WITH(with("mistral", {{"hidden_act", "gelu"}}), Catch::Contains("field 'hidden_act'"));
  // Gemma: GeGLU, x * (1 + w) norms, embeddings times sqrt(hidden), tied unless told otherwise.
  const ModelConfig gemma = with("gemma", {{"head_dim", 256}});
  CHECK((gemma.mlp == MlpKind::geglu && gemma.norm_weight_offset == 1.0f && gemma.tie_embeddings));
  CHECK(gemma.embedding_scale == std::sqrt(12.0f));
  CHECK(gemma.q_dim() == 512);
  const ModelConfig gemma_back = ModelConfig::from_json(gemma.to_json());
  CHECK((gemma_back.model_type == "gemma" && gemma_back.mlp == MlpKind::geglu && gemma_back.head_dim == 256));
  CHECK_THROWS_WITH(with("gemma", {{"hidden_activation", "gelu"}}), Catch::Contains("field 'hidden_activation'"));
  CHECK_THROWS_WITH(with("gemma", {{"final_logit_softcapping", 30.0}}),
                    Catch::Contains("field 'final_logit_softcapping' is not supported"));
  CHECK_THROWS_WITH(with("gemma2"), Catch::Contains("model_type 'gemma2' is not supported"));
}

TEST_CASE("a sliding window: sequences within it run, longer ones are refused naming the field", "[model]") {
  const ModelConfig c = ModelConfig::from_json({{"model_type", "mistral"}, {"vocab_size", 13}, {"hidden_size", 12},
                                                {"num_hidden_layers", 1}, {"num_attention_heads", 2},
                                                {"intermediate_size", 20}, {"sliding_window", 4}});
  CHECK(c.sliding_window == 4);
  CpuModel<float> m(c);
  m.init_random(1);
  const std::vector<int32_t> tokens = {1, 2, 3, 4, 5, 6}, targets = {2, 3, 4, 5, 6, -1};
  const std::vector<int32_t> pos_ok = {0, 1, 2, 3, 0, 1}, cu_ok = {0, 4, 6};
  CHECK(std::isfinite(m.forward({6, tokens, targets, pos_ok, cu_ok}, 5.0)));
  const std::vector<int32_t> pos_long = {0, 1, 2, 3, 4, 5}, cu_long = {0, 6};
  CHECK_THROWS_WITH(m.forward({6, tokens, targets, pos_long, cu_long}, 5.0), Catch::Contains("sliding_window (4)"));
  auto cache = m.make_cache(8);
  m.decode(std::span(tokens).first(4), cache);
  CHECK_THROWS_WITH(m.decode(std::span(tokens).subspan(4, 1), cache), Catch::Contains("sliding_window"));
  // Qwen2 ignores its window unless use_sliding_window is true.
  const ModelConfig q = ModelConfig::from_json({{"model_type", "qwen2"}, {"vocab_size", 13}, {"hidden_size", 12},
                                                {"num_hidden_layers", 1}, {"num_attention_heads", 2},
                                                {"intermediate_size", 20}, {"sliding_window", 4}});
  CHECK(q.sliding_window == 0);
}
