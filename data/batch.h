// One training micro-batch as the model takes it (engine/model.h BatchView): B rows of T tokens,
// flattened. Samples packed into a row never see each other: cu_seqlens cuts the flat tokens
// into segments (every sample, and the padding at a row's end), and positions restart at each.
#pragma once

#include <cstdint>
#include <vector>

namespace ift {

struct Batch {
  int B = 0, T = 0;
  std::vector<int32_t> tokens;      // (B*T) padding uses the packed file's pad_id
  std::vector<int32_t> targets;     // (B*T) targets[t] = tokens[t+1] when that token is trained and in the
                                    //       same sample, else -1 (already shifted; negative = no loss)
  std::vector<int32_t> positions;   // (B*T) 0, 1, ... restarting at every segment
  std::vector<int32_t> cu_seqlens;  // (S+1) segment starts over the flat B*T tokens: 0, ..., B*T

  int64_t trained_tokens() const {
    int64_t n = 0;
    for (int32_t t : targets) n += t >= 0;
    return n;
  }
};

}  // namespace ift
