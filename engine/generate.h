// Text generation from a model: KV-cache decoding with greedy, temperature, top-k and top-p
// sampling, stopping at EOS.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <vector>

#include "engine/base/error.h"
#include "engine/model.h"

namespace ift {

struct SamplingOptions {
  int max_new_tokens = 128;
  float temperature = 0.0f;  // 0: greedy (argmax)
  int top_k = 0;             // keep the k most likely tokens; 0: all
  float top_p = 1.0f;        // keep the smallest set whose probability reaches p; 1: all
  uint64_t seed = 0;
  std::vector<int32_t> stop_ids;  // generation ends after emitting one of these (EOS)
};

// Picks the next token from logits (V) as `options` says.
int32_t sample_token(std::span<const float> logits, const SamplingOptions& options, std::mt19937_64& rng);

// Generates after `prompt` with a KV cache on the model's backend (a Model<B> or Transformer<B> of
// any backend); calls on_token (if set) for each new token as soon as it is chosen. The returned
// tokens include the stop token when one ended generation.
template <class M>
std::vector<int32_t> generate(const M& model, std::span<const int32_t> prompt, const SamplingOptions& options,
                              const std::function<void(int32_t)>& on_token = nullptr) {
  const SamplingOptions& o = options;
  IFT_CHECK(!prompt.empty(), "generate: the prompt is empty (a BOS token at least is needed)");
  int capacity = static_cast<int>(prompt.size()) + o.max_new_tokens;
  if (model.config().learned_positions()) capacity = std::min(capacity, model.config().max_positions);
  IFT_CHECK(static_cast<int>(prompt.size()) < capacity || o.max_new_tokens == 0, "generate: the prompt of ",
            prompt.size(), " tokens fills the model's ", capacity, " positions");
  auto cache = model.make_cache(capacity);
  std::mt19937_64 rng(o.seed);
  std::vector<int32_t> out;
  std::vector<float> logits = model.decode(prompt, cache);
  while (static_cast<int>(out.size()) < o.max_new_tokens) {
    const int32_t next = sample_token(logits, o, rng);
    out.push_back(next);
    if (on_token) on_token(next);
    if (std::find(o.stop_ids.begin(), o.stop_ids.end(), next) != o.stop_ids.end()) break;
    if (cache.length >= cache.capacity) break;
    logits = model.decode(std::span<const int32_t>(&next, 1), cache);
  }
  return out;
}

}  // namespace ift
