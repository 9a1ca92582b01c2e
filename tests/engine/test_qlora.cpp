// QLoRA: LoRA on an NF4 base (lora.quantize: nf4; ParamLayout::nf4, Transformer::weight). The
// projections are quantized once at load and dequantized into a scratch before each GEMM, so a
// model with an NF4 base must compute exactly what the same model computes with its base weights
// replaced by nf4_dequantize(nf4_quantize(W)) and stored as usual: the GEMMs see the same act_t
// values (an fp32 product rounded once to act_t, by load_params in the one, by the dequantize op in
// the other), so loss, logits, adapter gradients and decoded logits are required bitwise equal, on
// cpu, emu fp32 and emu bf16. Training leaves the NF4 codes and scales bitwise as loaded, a run
// stopped and resumed from its adapters and optimizer state continues bit for bit, and `ift dump
// --quantize nf4` runs the same quantized base.
#include <cstring>
#include <random>

#include <cstdlib>
#include <filesystem>

#include "engine/lora_files.h"
#include "engine/model.h"
#include "engine/nf4.h"
#include "engine/safetensors.h"
#include "engine/weights.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

namespace {

using bf16 = __nv_bfloat16;

// Widths that are no multiple of 64 (NF4 blocks straddle rows and views end inside blocks), GQA, biases.
ModelConfig llama() {
  return ModelConfig::from_json({{"model_type", "llama"}, {"vocab_size", 13}, {"hidden_size", 12},
                                 {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"num_key_value_heads", 2},
                                 {"head_dim", 4}, {"intermediate_size", 10}, {"tie_word_embeddings", false},
                                 {"attention_bias", true}});
}

ModelConfig gpt2() {
  return ModelConfig::from_json({{"model_type", "gpt2"}, {"vocab_size", 11}, {"n_embd", 16}, {"n_layer", 2},
                                 {"n_head", 2}, {"n_inner", 20}, {"n_positions", 16}});
}

LoraConfig lora_of(const ModelConfig& c, bool nf4) {
  LoraConfig l;
  l.r = 2, l.alpha = 4;
  l.targets = c.model_type == "gpt2" ? std::vector<std::string>{"c_attn", "c_proj"}
                                     : std::vector<std::string>{"q_proj", "v_proj", "o_proj", "down_proj"};
  l.quantize = nf4 ? "nf4" : "none";
  return l;
}

ModelOptions options_of(const ModelConfig& c, bool nf4) {
  ModelOptions o;
  o.lora = lora_of(c, nf4);
  return o;
}

struct TestBatch {
  std::vector<int32_t> tokens, targets, positions, cu;
  BatchView view() const { return {static_cast<int>(tokens.size()), tokens, targets, positions, cu}; }
};

TestBatch batch(int V, uint32_t seed) {  // two samples, 6 and 5 tokens
  std::mt19937 rng(seed);
  TestBatch b;
  b.cu = {0, 6, 11};
  for (int i = 0; i < 11; ++i) b.tokens.push_back(static_cast<int32_t>(rng() % V));
  for (int s = 0; s < 2; ++s)
    for (int i = b.cu[s]; i < b.cu[s + 1]; ++i) {
      b.positions.push_back(i - b.cu[s]);
      b.targets.push_back(i + 1 < b.cu[s + 1] ? b.tokens[i + 1] : -1);
    }
  return b;
}

// Random base weights (norms 1) and adapters with a non-zero B, so every path carries signal.
std::vector<float> weights(const ModelConfig& c, uint64_t seed) {
  CpuModel<float> m(c, options_of(c, false));
  m.init_random(seed, 0.3);
  std::vector<float> w = m.params_to_host();
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> noise(0.0f, 0.2f);
  for (const ParamView& v : m.layout().adapter_views)
    for (int64_t i = 0; i < v.numel(); ++i) w[v.offset + i] += noise(rng);
  return w;
}

// w with every NF4 view of `layout` replaced by its round trip through the reference quantizer.
std::vector<float> round_trip(const ParamLayout& layout, std::vector<float> w) {
  for (const Nf4Slice& s : layout.nf4) {
    const Nf4Tensor q = nf4_quantize(std::span<const float>(w).subspan(s.offset, s.n));
    nf4_dequantize(q, std::span<float>(w).subspan(s.offset, s.n));
  }
  return w;
}

struct Run {
  double loss = 0;
  std::vector<float> logits, grads, decoded, params;
};

template <class B>
Run run(const ModelConfig& c, bool nf4, const std::vector<float>& w, const TestBatch& b) {
  Model<B> m(c, options_of(c, nf4));
  m.load_params(w);
  Run r;
  r.loss = m.forward(b.view(), 9.0);
  r.logits = m.logits_to_host();
  m.backward();
  r.grads = m.grads_to_host();
  KVCache<B> cache = m.make_cache(8);
  r.decoded = m.decode(std::span<const int32_t>(b.tokens).first(5), cache);
  const std::vector<float> more = m.decode(std::span<const int32_t>(b.tokens).subspan(5, 1), cache);
  r.decoded.insert(r.decoded.end(), more.begin(), more.end());
  r.params = m.net().params_to_host();
  return r;
}

template <class B>
void check_equivalence(const ModelConfig& c) {
  INFO(c.model_type << " on " << name_of(B::kind) << " " << (std::is_same_v<typename B::act_t, float> ? "fp32" : "bf16"));
  const ParamLayout layout = ParamLayout::build(c, lora_of(c, true));
  // One NF4 tensor per Hugging Face projection module: Llama's q, k, v, o, gate, up, down; GPT-2's four.
  CHECK(layout.nf4.size() == size_t(c.n_layers) * (c.model_type == "gpt2" ? 4 : 7));
  const std::vector<float> w = weights(c, 11);
  const TestBatch b = batch(c.vocab_size, 5);
  const Run q = run<B>(c, true, w, b);
  const Run ref = run<B>(c, false, round_trip(layout, w), b);
  CHECK(q.loss == ref.loss);
  CHECK(q.logits == ref.logits);
  CHECK(q.grads == ref.grads);  // the adapters' (the base is frozen: zeros)
  CHECK(q.decoded == ref.decoded);
  CHECK(q.params == ref.params);  // an NF4 projection reads back as its GEMM sees it
  // And the quantization is not a no-op: the unquantized model differs.
  const Run dense = run<B>(c, false, w, b);
  CHECK(dense.loss != q.loss);
}

}  // namespace

TEST_CASE("qlora: an NF4 base computes what its dequantized weights compute unquantized (cpu, emu fp32, bf16)",
          "[qlora]") {
  for (const ModelConfig& c : {llama(), gpt2()}) {
    check_equivalence<CpuBackend<float>>(c);
    check_equivalence<EmuBackend<float>>(c);
    check_equivalence<EmuBackend<bf16>>(c);
  }
}

TEST_CASE("qlora: the layout keeps the flat offsets, the parameter buffer drops the projections", "[qlora]") {
  const ModelConfig c = llama();
  const ParamLayout dense = ParamLayout::build(c, lora_of(c, false));
  const ParamLayout q = ParamLayout::build(c, lora_of(c, true));
  REQUIRE(q.views.size() == dense.views.size());
  for (size_t i = 0; i < q.views.size(); ++i) CHECK(q.views[i].offset == dense.views[i].offset);
  CHECK(q.total == dense.total);
  CHECK(dense.stored_total == dense.total);
  CHECK(dense.nf4.empty());
  size_t projections = 0, bytes = 0;
  for (const LayerParams& L : q.layers)
    for (size_t w : {L.qkv_w, L.o_w, L.up_w, L.down_w}) {
      CHECK(q.quantized(w));
      projections += q.storage_of(w).numel;
    }
  for (const Nf4Slice& s : q.nf4) {
    CHECK(s.absmax % 16 == 0);
    bytes += nf4_bytes(s.n);
  }
  CHECK(q.stored_total < dense.total - projections + 128 * q.storage.size());
  CHECK(q.nf4_bytes >= bytes);
  CHECK(q.nf4_bytes < bytes + 32 * q.nf4.size());  // alignment only
  CHECK(!q.quantized(q.wte));
  CHECK(!q.quantized(q.lm_head));
  CHECK(!q.quantized(q.layers[0].norm1_w));
  CHECK(!q.quantized(q.layers[0].qkv_b));  // biases stay
  CHECK_THROWS_WITH(q.stored_at(q.layers[1].o_w), Catch::Contains("is in an NF4 tensor"));
  // A trainable group may not hold an NF4 projection.
  const std::vector<ParamGroupSpec> all_trainable = {{"everything", [](const ParamView&) { return true; }, true}};
  CHECK_THROWS_WITH(CpuModel<float>(c, options_of(c, true), all_trainable),
                    Catch::Contains("is stored in NF4 (lora.quantize: nf4) and must be in a frozen group"));
}

namespace {

struct Trained {
  std::vector<double> losses;
  std::vector<float> params;  // the flat layout after the last step
  OptimizerState state;
};

// `steps` AdamW steps from `w` (and from `state` when given), checking the NF4 buffer and the stored
// base stay bitwise as loaded.
template <class B>
Trained train(const ModelConfig& c, const std::vector<float>& w, int steps, const OptimizerState* state) {
  Model<B> m(c, options_of(c, true));
  m.load_params(w);
  m.enable_optimizer({});
  if (state) m.set_optimizer_state(*state);
  const std::vector<uint8_t> codes = m.net().nf4_to_host();
  const std::vector<float> before = m.params_to_host();
  const TestBatch b = batch(c.vocab_size, 3);
  Trained t;
  for (int s = 0; s < steps; ++s) {
    m.zero_grads();
    t.losses.push_back(m.forward(b.view(), 9.0));
    m.backward();
    m.step(2e-2f);
  }
  CHECK(m.net().nf4_to_host() == codes);  // codes and absmax, bitwise
  t.params = m.params_to_host();
  const ParamLayout& layout = m.layout();
  for (const ParamView& v : layout.views)
    CHECK(std::memcmp(before.data() + v.offset, t.params.data() + v.offset, v.numel() * sizeof(float)) == 0);
  CHECK(!std::equal(before.begin() + layout.base_total, before.end(), t.params.begin() + layout.base_total));
  t.state = m.optimizer_state();
  return t;
}

template <class B>
void check_training(const ModelConfig& c) {
  INFO(c.model_type << " on " << name_of(B::kind) << " " << (std::is_same_v<typename B::act_t, float> ? "fp32" : "bf16"));
  const std::vector<float> w = weights(c, 21);
  const Trained straight = train<B>(c, w, 4, nullptr);
  CHECK(straight.losses.back() < straight.losses.front());
  // Stopped after 2 steps and resumed as the trainer does: the base from the original weights, the
  // adapters and the optimizer state from the checkpoint.
  const Trained first = train<B>(c, w, 2, nullptr);
  std::vector<float> resumed_w = w;
  const size_t base = ParamLayout::build(c, lora_of(c, true)).base_total;
  std::copy(first.params.begin() + base, first.params.end(), resumed_w.begin() + base);
  const Trained second = train<B>(c, resumed_w, 2, &first.state);
  CHECK(second.losses[0] == straight.losses[2]);
  CHECK(second.losses[1] == straight.losses[3]);
  CHECK(std::memcmp(second.params.data() + base, straight.params.data() + base,
                    (straight.params.size() - base) * sizeof(float)) == 0);
  CHECK(second.state.m == straight.state.m);
  CHECK(second.state.v == straight.state.v);
}

}  // namespace

TEST_CASE("qlora: training moves the adapters only, the NF4 codes stay bitwise, resume is bitwise", "[qlora]") {
  for (const ModelConfig& c : {llama(), gpt2()}) {
    check_training<CpuBackend<float>>(c);
    check_training<EmuBackend<float>>(c);
    check_training<EmuBackend<bf16>>(c);
  }
}

// `ift dump --quantize nf4` runs the base a training run with lora.quantize: nf4 runs: the same as
// `ift dump` on a model directory whose weights are the round trip of the base, bit for bit.
TEST_CASE("qlora: ift dump --quantize nf4 equals the dequantized base dumped unquantized", "[qlora]") {
  const auto dir = fixture("golden/lora_llama");
  const BaseWithAdapter m = load_base_with_adapter(dir, dir / "adapter");
  LoraConfig l = m.lora;
  l.quantize = "nf4";
  const std::vector<float> w = round_trip(ParamLayout::build(m.config, l), m.flat);
  const ParamLayout base = ParamLayout::build(m.config);
  const auto tmp = temp_dir("qlora-dump");
  std::filesystem::copy_file(dir / "config.json", tmp / "config.json");
  TensorSet weights;
  weights.add_params(base, std::span<const float>(w).first(base.total));
  write_safetensors(tmp / "model.safetensors", weights.tensors(), DType::F32, {{"format", "pt"}});
  for (const std::string mode : {"--backend cpu", "--backend emu --precision bf16"}) {
    INFO(mode);
    const auto dump = [&](const std::filesystem::path& model, const std::string& extra, const std::string& out) {
      const std::string cmd = std::string(IFT_BINARY) + " dump --model " + model.string() + " --adapter " +
                              (dir / "adapter").string() + " --batch " + (dir / "batch.json").string() + " --out " +
                              (tmp / out).string() + " " + mode + extra + " > /dev/null";
      INFO(cmd);
      REQUIRE(std::system(cmd.c_str()) == 0);
      return SafetensorsReader(tmp / out);
    };
    const SafetensorsReader q = dump(dir, " --quantize nf4", "q.safetensors");
    const SafetensorsReader ref = dump(tmp, "", "ref.safetensors");
    const SafetensorsReader dense = dump(dir, "", "dense.safetensors");
    REQUIRE(q.tensors().size() == ref.tensors().size());
    for (const TensorInfo& t : ref.tensors()) {
      INFO(t.name);
      CHECK(q.read_f32(t.name) == ref.read_f32(t.name));
    }
    CHECK(q.read_f32("loss") != dense.read_f32("loss"));
  }
}
