#include "engine/generate.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/base/error.h"

namespace ift {

int32_t sample_token(std::span<const float> logits, const SamplingOptions& o, std::mt19937_64& rng) {
  const int V = static_cast<int>(logits.size());
  IFT_CHECK(V > 0, "sample_token: empty logits");
  if (o.temperature <= 0.0f) return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  std::vector<int32_t> ids(V);
  std::iota(ids.begin(), ids.end(), 0);
  // Most likely first; ties by id so the order (and the draw) is deterministic.
  std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  int keep = o.top_k > 0 ? std::min(o.top_k, V) : V;
  std::vector<double> prob(keep);
  const double m = logits[ids[0]];
  double sum = 0;
  for (int i = 0; i < keep; ++i) sum += (prob[i] = std::exp((logits[ids[i]] - m) / o.temperature));
  if (o.top_p < 1.0f) {
    double cum = 0;
    int k = 0;
    while (k < keep && cum < o.top_p * sum) cum += prob[k++];
    keep = std::max(k, 1);
  }
  std::discrete_distribution<int> pick(prob.begin(), prob.begin() + keep);
  return ids[pick(rng)];
}

std::vector<int32_t> generate(const CpuModel<float>& model, std::span<const int32_t> prompt,
                              const SamplingOptions& o, const std::function<void(int32_t)>& on_token) {
  IFT_CHECK(!prompt.empty(), "generate: the prompt is empty (a BOS token at least is needed)");
  int capacity = static_cast<int>(prompt.size()) + o.max_new_tokens;
  if (model.config().family == Family::gpt2) capacity = std::min(capacity, model.config().max_positions);
  IFT_CHECK(static_cast<int>(prompt.size()) < capacity || o.max_new_tokens == 0, "generate: the prompt of ",
            prompt.size(), " tokens fills the model's ", capacity, " positions");
  KVCache<float> cache = model.make_cache(capacity);
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
