// Generation: the KV-cache path equals full recomputation, token for token, and sampling options
// behave as documented.
#include <random>

#include "engine/generate.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

// Greedy decoding the slow way: the whole sequence through forward() for every new token.
std::vector<int32_t> greedy_uncached(CpuModel<float>& model, std::vector<int32_t> seq, int steps) {
  std::vector<int32_t> out;
  const int V = model.config().vocab_size;
  for (int s = 0; s < steps; ++s) {
    const int N = static_cast<int>(seq.size());
    std::vector<int32_t> targets(N, -1), positions(N), cu = {0, N};
    for (int i = 0; i < N; ++i) positions[i] = i;
    model.forward({N, seq, targets, positions, cu}, 1.0);
    const std::vector<float> all = model.logits();
    const std::span<const float> last = std::span(all).subspan(size_t(N - 1) * V, V);
    const int32_t next = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    out.push_back(next);
    seq.push_back(next);
  }
  return out;
}

}  // namespace

TEST_CASE("greedy generation with and without the KV cache gives the same tokens", "[generate]") {
  for (const char* family : {"gpt2", "llama"}) {
    const nlohmann::json j = std::string(family) == "gpt2"
        ? nlohmann::json{{"model_type", "gpt2"}, {"vocab_size", 23}, {"n_embd", 12}, {"n_layer", 2}, {"n_head", 3},
                         {"n_positions", 32}}
        : nlohmann::json{{"model_type", "llama"}, {"vocab_size", 23}, {"hidden_size", 16}, {"num_hidden_layers", 2},
                         {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"intermediate_size", 24}};
    CpuModel<float> model(ModelConfig::from_json(j));
    model.init_random(5, 0.5);  // large weights: varied, confident predictions
    const std::vector<int32_t> prompt = {1, 7, 3, 19, 4};
    SamplingOptions o;
    o.max_new_tokens = 20;
    const std::vector<int32_t> cached = generate(model, prompt, o);
    INFO(family);
    CHECK(cached == greedy_uncached(model, prompt, 20));
    // The cache's logits equal forward()'s for the same prefix.
    auto cache = model.make_cache(16);
    const std::vector<float> a = model.decode(std::span(prompt).first(3), cache);
    const std::vector<float> b = model.decode(std::span(prompt).subspan(3), cache);
    std::vector<int32_t> t(5, -1), pos = {0, 1, 2, 3, 4}, cu = {0, 5};
    model.forward({5, prompt, t, pos, cu}, 1.0);
    const std::vector<float> all = model.logits();
    const std::vector<float> want(all.end() - 23, all.end());
    require_close("decoded logits", b, want, 1e-5, 1e-4);
  }
}

TEST_CASE("sampling: greedy, top-k 1, stop ids, seeded draws", "[generate]") {
  const std::vector<float> logits = {0.1f, 2.0f, -1.0f, 1.9f, 0.0f};
  std::mt19937_64 rng(1);
  SamplingOptions greedy;
  CHECK(sample_token(logits, greedy, rng) == 1);
  SamplingOptions k1;
  k1.temperature = 1.0f, k1.top_k = 1;
  for (int i = 0; i < 20; ++i) CHECK(sample_token(logits, k1, rng) == 1);
  SamplingOptions p;
  p.temperature = 1.0f, p.top_p = 0.7f;  // tokens 1 and 3 hold ~0.45 + ~0.41 of the mass
  std::vector<int> seen(5, 0);
  for (int i = 0; i < 400; ++i) ++seen[sample_token(logits, p, rng)];
  CHECK(seen[0] + seen[2] + seen[4] == 0);
  CHECK(seen[1] > 100);
  CHECK(seen[3] > 100);
  SamplingOptions t;
  t.temperature = 1.0f, t.seed = 42;
  std::mt19937_64 r1(42), r2(42);
  for (int i = 0; i < 10; ++i) CHECK(sample_token(logits, t, r1) == sample_token(logits, t, r2));
}

// Decoding runs through the backend's ops: the emu backend's KV-cache path (its decode-attention
// kernel, the cast GEMMs) gives cpu's logits within the backend's tolerance, in fp32 and bf16, over
// a prompt chunk and then single tokens, with a head dim that is not a power of two.
TEST_CASE("KV-cache decoding on emu equals cpu, fp32 and bf16", "[generate]") {
  for (const char* family : {"gpt2", "llama"}) {
    const nlohmann::json j = std::string(family) == "gpt2"
        ? nlohmann::json{{"model_type", "gpt2"}, {"vocab_size", 29}, {"n_embd", 15}, {"n_layer", 2}, {"n_head", 3},
                         {"n_positions", 40}}
        : nlohmann::json{{"model_type", "llama"}, {"vocab_size", 29}, {"hidden_size", 24}, {"num_hidden_layers", 2},
                         {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"head_dim", 6},
                         {"intermediate_size", 40}};
    const ModelConfig config = ModelConfig::from_json(j);
    CpuModel<float> cpu(config);
    cpu.init_random(9, 0.3);
    const std::vector<float> weights = cpu.params_to_host();
    Model<EmuBackend<float>> f32(config);
    Model<EmuBackend<__nv_bfloat16>> b16(config);
    f32.load_params(weights), b16.load_params(weights);
    auto c_cpu = cpu.make_cache(33);
    auto c_f32 = f32.make_cache(33);
    auto c_b16 = b16.make_cache(33);
    std::vector<int32_t> chunk = {3, 17, 8, 1, 28, 5, 11};
    for (int round = 0; round < 6; ++round) {
      INFO(family << " round " << round);
      const std::vector<float> want = cpu.decode(chunk, c_cpu);
      require_close("emu fp32 decode", f32.decode(chunk, c_f32), want, 1e-5, 1e-4);
      require_close_to_max("emu bf16 decode", b16.decode(chunk, c_b16), want, 5e-2);
      chunk = {static_cast<int32_t>((round * 7 + 2) % 29)};
    }
    CHECK(c_f32.length == c_cpu.length);
    CHECK(c_b16.length == 12);
    // Greedy generation on emu fp32 picks the same tokens as on cpu.
    SamplingOptions o;
    o.max_new_tokens = 12;
    const std::vector<int32_t> prompt = {1, 4, 9, 16};
    CHECK(generate(f32, prompt, o) == generate(cpu, prompt, o));
  }
}
