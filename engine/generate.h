// Text generation from a model: KV-cache decoding with greedy, temperature, top-k and top-p
// sampling, stopping at EOS.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <vector>

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

// Generates after `prompt`; calls on_token (if set) for each new token as soon as it is chosen.
// The returned tokens include the stop token when one ended generation.
std::vector<int32_t> generate(const CpuModel<float>& model, std::span<const int32_t> prompt,
                              const SamplingOptions& options,
                              const std::function<void(int32_t)>& on_token = nullptr);

}  // namespace ift
