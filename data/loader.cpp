#include "data/loader.h"

#include <nlohmann/json.hpp>

#include "engine/base/error.h"

namespace ift {

std::string LoaderState::to_json() const {
  return nlohmann::json{{"seed", seed}, {"epoch", epoch}, {"cursor", cursor}}.dump();
}

LoaderState LoaderState::from_json(const std::string& text) {
  try {
    const auto j = nlohmann::json::parse(text);
    LoaderState s;
    s.seed = j.at("seed").get<uint64_t>();
    s.epoch = j.at("epoch").get<int64_t>();
    s.cursor = j.at("cursor").get<int64_t>();
    IFT_CHECK(s.epoch >= 0 && s.cursor >= 0, "loader state has a negative epoch or cursor: ", text);
    return s;
  } catch (const nlohmann::json::exception& e) {
    fail("malformed loader state '", text, "': ", e.what());
  }
}

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

std::vector<int64_t> epoch_order(int64_t n_rows, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n_rows));
  for (int64_t i = 0; i < n_rows; ++i) order[i] = i;
  uint64_t state = seed ^ (0xd1b54a32d192ed03ull * static_cast<uint64_t>(epoch + 1));
  for (int64_t i = n_rows - 1; i > 0; --i) {
    // Multiply-shift maps 64 random bits to [0, i]; the bias is below 2^-40 for any row count here.
    const auto j = static_cast<int64_t>((static_cast<unsigned __int128>(splitmix64(state)) * (i + 1)) >> 64);
    std::swap(order[i], order[j]);
  }
  return order;
}

void append_row(Batch& batch, std::span<const uint32_t> sample_lengths, std::span<const int32_t> tokens,
                std::span<const uint8_t> trained, int32_t pad_id) {
  if (batch.cu_seqlens.empty()) batch.cu_seqlens.push_back(0);
  const auto start = static_cast<int32_t>(batch.tokens.size());
  size_t k = 0;
  for (uint32_t len : sample_lengths) {
    for (uint32_t j = 0; j < len; ++j, ++k) {
      batch.tokens.push_back(tokens[k]);
      batch.positions.push_back(static_cast<int32_t>(j));
      // The first token of the next sample is never a target of this one.
      batch.targets.push_back(j + 1 < len && trained[k + 1] ? tokens[k + 1] : -1);
    }
    batch.cu_seqlens.push_back(static_cast<int32_t>(batch.tokens.size()));
  }
  IFT_ASSERT(k == tokens.size());
  const int32_t used = static_cast<int32_t>(batch.tokens.size()) - start;
  IFT_CHECK(used <= batch.T, "a row of ", used, " tokens does not fit T = ", batch.T);
  if (used < batch.T) {  // padding: its own segment, never trained
    for (int32_t j = 0; j < batch.T - used; ++j) {
      batch.tokens.push_back(pad_id);
      batch.positions.push_back(j);
      batch.targets.push_back(-1);
    }
    batch.cu_seqlens.push_back(static_cast<int32_t>(batch.tokens.size()));
  }
}

Loader::Loader(const PackedFile& file, int batch_rows, uint64_t seed, int rank, int world)
    : file_(file), B_(batch_rows), rank_(rank), world_(world) {
  IFT_CHECK(batch_rows > 0, "batch size must be positive, got ", batch_rows);
  IFT_CHECK(world > 0 && rank >= 0 && rank < world, "rank ", rank, " is not in [0, ", world, ")");
  IFT_CHECK(file.n_rows() > 0, file.path().string(), ": holds no rows");
  state_.seed = seed;
  order_ = epoch_order(file.n_rows(), seed, 0);
}

void Loader::restore(const LoaderState& s) {
  IFT_CHECK(s.seed == state_.seed, "loader state was saved with seed ", s.seed, ", this loader uses ", state_.seed);
  IFT_CHECK(s.cursor <= file_.n_rows(), "loader state cursor ", s.cursor, " is past the ", file_.n_rows(),
            " rows of ", file_.path().string(), " (a different file?)");
  if (s.epoch != state_.epoch) order_ = epoch_order(file_.n_rows(), s.seed, s.epoch);
  state_ = s;
}

int64_t Loader::take_row() {
  if (state_.cursor == file_.n_rows()) {
    ++state_.epoch;
    state_.cursor = 0;
    order_ = epoch_order(file_.n_rows(), state_.seed, state_.epoch);
  }
  return order_[state_.cursor++];
}

Batch Loader::next() {
  Batch b;
  b.B = B_;
  b.T = file_.seq_len();
  const size_t n = static_cast<size_t>(B_) * b.T;
  b.tokens.reserve(n);
  b.targets.reserve(n);
  b.positions.reserve(n);
  for (int r = 0; r < world_; ++r) {
    for (int i = 0; i < B_; ++i) {
      const int64_t row = take_row();
      if (r != rank_) continue;
      append_row(b, file_.row_sample_lengths(row), file_.row_tokens(row), file_.row_trained(row),
                 file_.header().pad_id);
    }
  }
  return b;
}

}  // namespace ift
