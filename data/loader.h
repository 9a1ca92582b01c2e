// Batches from a packed file: rows in a deterministic shuffled order, a new order every epoch.
//
// The stream is endless: a batch that runs past the end of an epoch continues with the first rows
// of the next. With world > 1, each rank takes its own B rows out of every B*world consecutive
// rows, so ranks never share a row. The position in the stream is a LoaderState; restoring it
// yields exactly the batches that would have come next.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "data/batch.h"
#include "data/packed_file.h"

namespace ift {

struct LoaderState {
  uint64_t seed = 0;
  int64_t epoch = 0;  // epochs completed
  int64_t cursor = 0; // next row, as an index into this epoch's order

  std::string to_json() const;
  static LoaderState from_json(const std::string& text);  // throws ift::Error on malformed text
};

// Row order of one epoch: a Fisher-Yates shuffle driven by splitmix64 of (seed, epoch), written
// out here (not std::shuffle) so it is the same on every compiler and platform.
std::vector<int64_t> epoch_order(int64_t n_rows, uint64_t seed, int64_t epoch);

class Loader {
 public:
  Loader(const PackedFile& file, int batch_rows, uint64_t seed, int rank = 0, int world = 1);

  Batch next();
  LoaderState state() const { return state_; }
  void restore(const LoaderState& s);  // throws if the seed differs from this loader's

  int64_t rows_per_epoch() const { return file_.n_rows(); }

 private:
  int64_t take_row();  // the next row of the stream (any rank), moving epochs as needed

  const PackedFile& file_;
  int B_, rank_, world_;
  LoaderState state_;
  std::vector<int64_t> order_;  // the order of state_.epoch
};

// Appends one row (its samples, then padding) to a batch being built: the rule the loader uses,
// exposed so tests and tools can build batches without a file.
void append_row(Batch& batch, std::span<const uint32_t> sample_lengths, std::span<const int32_t> tokens,
                std::span<const uint8_t> trained, int32_t pad_id);

}  // namespace ift
