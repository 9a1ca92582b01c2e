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

}  // namespace ift
