// The training loop of `ift train`: data, model, AdamW, schedule, evaluation, checkpoints, resume.
//
// One optimizer step = grad_accum micro-batches. Their losses are all divided by the trained
// tokens of the whole step, so the step's gradient is the mean over its trained tokens whatever the
// split (1 x 8 and 8 x 1 give the same update). A step whose loss or gradient is not finite is
// skipped (parameters and moments untouched) and counted; max_bad_steps in a row stop training.
// A stop request (SIGINT, SIGTERM, SIGUSR1 in `ift train`) finishes the current step, saves a
// checkpoint and returns.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "data/packed_file.h"
#include "engine/model.h"
#include "engine/train/train_config.h"

namespace ift {

struct TrainSummary {
  int64_t steps = 0;           // optimizer steps taken in total (resumed ones included)
  int64_t skipped_steps = 0;   // non-finite steps skipped
  double last_loss = 0;
  double last_eval_loss = -1;  // -1: no evaluation ran
  std::filesystem::path last_checkpoint;
  int64_t failed_saves = 0;    // checkpoints that could not be written (on_save_error: continue)
  bool interrupted = false;
};

struct EvalResult {
  double loss = 0;             // mean cross-entropy per trained token
  int64_t trained_tokens = 0;
  int64_t batches = 0;
};
// Mean loss per trained token over the rows of a packed file, in file order (no shuffling: the
// same rows every time), at most max_batches micro-batches of rows_per_batch rows (0: all).
template <class B>
EvalResult evaluate(Model<B>& model, const PackedFile& file, int rows_per_batch, int64_t max_batches);

// Where the caller joins the training step. on_gradients runs once per step for each trainable
// parameter group, after the last micro-batch's backward and before the gradient norm and the
// AdamW step: the place where data parallelism all-reduces (fp32 gradients of `n` elements in the
// memory of backend `where`).
struct TrainHooks {
  std::function<void(const std::string& group, float* grads, size_t n, BackendKind where)> on_gradients;
};

// Runs training as configured. With resume, continues from the newest checkpoint in
// out_dir/checkpoints, after checking its files' sha256 and that the config matches it in every
// field that changes the result (unless config.resume_anyway); with no checkpoint yet it starts from
// the beginning and says so (a requeued job runs the same command line every time). `stop` (may
// be null) is polled after every step: when set, the step finishes, a checkpoint is written and
// train returns with interrupted set.
TrainSummary train(const TrainConfig& config, bool resume, const std::atomic<bool>* stop = nullptr,
                   const TrainHooks& hooks = {});

}  // namespace ift
