// The training configuration: one YAML file (`ift train CONFIG.yaml`), every field below, checked
// strictly: an unknown key, a wrong type or an impossible value is an error naming the key, so a
// typo never silently trains with a default. `--set key.sub=value` overrides any field.
//
//   out_dir: runs/demo            # checkpoints, metrics.jsonl, samples.jsonl, config.yaml
//   seed: 0                       # init, data order
//   backend: cpu                  # cpu | emu (the CUDA kernels in the emulator) | cuda
//   precision: fp32               # fp32 | bf16 (mixed; emu and cuda)
//   attention: ift                # ift | cudnn (cuDNN's fused attention; cuda, bf16)
//   recompute: false              # recompute norms and the MLP activation in backward
//   threads: 0                    # OpenMP threads; 0: all cores
//   loss: {fused: true}           # fused linear cross-entropy (no (N, V) logits); default: on when
//                                 #   the vocabulary is above 32768
//   model:
//     path: DIR                   # a Hugging Face model directory to fine-tune, or
//     init: {model_type: llama, hidden_size: 128, ...}   # a config.json, as YAML, to train from
//                                 # scratch; vocab_size, bos/eos ids default to the tokenizer's
//   tokenizer: PATH               # default: model.path
//   data:
//     train: DIR | [FILE, ...]    # a prepared directory (ift prepare), or raw files prepared on
//     eval: DIR | [FILE, ...]     #   the fly into out_dir/data/ (cached by a hash of the options)
//     format: auto                # the ift prepare options for raw files
//     template: auto              # the model's chat_template (tokenizer_config.json), else alpaca
//     mask: outputs
//     train_on_eos: all           # all | last | none: which trained turns keep their end of turn
//     weights: [1.0, ...]         # one per train file: copies of its records (0.5 half, 2 twice)
//     val_split: 0.0              # fraction of the training records held out as the eval set
//     pack: bfd
//     on_long: drop
//     on_bad: error
//   seq_len: 256                  # tokens per row (raw files are packed to this)
//   micro_batch: 4                # rows per forward/backward
//   grad_accum: 1                 # micro-batches per optimizer step
//   max_steps: 0                  # optimizer steps; 0: use epochs
//   epochs: 1                     # passes over the training rows, when max_steps is 0
//   optimizer: {lr: 3.0e-4, beta1: 0.9, beta2: 0.95, eps: 1.0e-8, weight_decay: 0.1,
//               decay_embeddings: true, max_grad_norm: 1.0}
//   schedule: {warmup_steps: 0, decay: cosine, min_lr: 0.0}   # decay: cosine | linear | constant
//             warmup_ratio: 0.0   # or warm-up as a fraction of the steps: ceil(ratio * steps)
//   loss: {average: token}        # token: mean over the step's trained tokens | sequence: mean of
//                                 #   each sample's mean token loss
//   residual_dropout: 0.0         # dropout on each sublayer's output before the residual add,
//   residual_dropout_schedule: linear   # linear: 0 at the bottom layer rising to the value at the
//                                 #   top (LIMA) | constant: every layer
//   neftune_alpha: 0.0            # NEFTune noise on the embeddings in training (the paper: 5, 10, 15)
//   log_every: 10                 # steps between metrics lines
//   eval_every: 0                 # steps between evaluations; 0: at the end only (if eval data)
//   eval_batches: 0               # micro-batches per evaluation; 0: the whole eval set
//   save_every: 0                 # steps between checkpoints; 0: at the end only
//   keep_last: 2                  # checkpoints kept
//   on_save_error: stop           # a checkpoint that cannot be written (disk full, I/O error):
//                                 #   stop (the error ends the run) | continue (logged, training
//                                 #   goes on; the final checkpoint must still succeed)
//   sample_prompts: []            # instructions generated from at each evaluation (samples.jsonl)
//   sample_max_tokens: 64
//   max_bad_steps: 5              # consecutive non-finite steps before training stops
//   distributed: {zero: 0, timeout_s: 600}   # under mpirun/srun/torchrun (docs/distributed.md):
//                                 # zero 1 slices AdamW moments and master weights across ranks;
//                                 # a collective waiting longer than timeout_s ends the rank
//   lora:                         # low-rank adapters on the frozen model.path (engine/lora.h)
//     r: 16                       #   rank; 0 or no block: a full fine-tune
//     alpha: 32                   #   the adapter output is scaled by alpha / r
//     dropout: 0.0                #   on the adapter input (only 0 is implemented yet)
//     targets: [q_proj, v_proj]   #   Hugging Face module names (GPT-2: c_attn, c_proj, c_fc)
//     rslora: false               #   scale alpha / sqrt(r) instead
//     quantize: none              #   none, or nf4: the base's projections in 4 bits (QLoRA)
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/optimizer.h"

namespace ift {

struct DataConfig {
  std::vector<std::string> train;  // one prepared dir, or raw files
  std::vector<std::string> eval;
  std::string format = "auto", tmpl = "auto", mask = "outputs", pack = "bfd", on_long = "drop", on_bad = "error";
  std::string train_on_eos = "all";  // all | last | none
  std::vector<double> weights;       // (train files) or empty: every file once
  double val_split = 0;              // fraction of the training records held out for evaluation
};

struct ScheduleConfig {
  int64_t warmup_steps = 0;
  double warmup_ratio = 0;  // exclusive with warmup_steps: warm-up = ceil(ratio * total steps)
  std::string decay = "cosine";  // cosine | linear | constant
  float min_lr = 0.0f;
};

struct DistributedConfig {
  int zero = 0;             // ZeRO stage: 0 (replicated optimizer) or 1 (sliced moments and masters)
  double timeout_s = 600;   // the watchdog's limit on one collective
};

struct TrainConfig {
  std::string out_dir = "runs/ift";
  uint64_t seed = 0;
  std::string backend = "cpu", precision = "fp32";
  std::string attention = "ift";  // ift | cudnn (engine/backend.h AttentionPath)
  bool recompute = false;
  std::optional<bool> fused_ce;  // loss.fused; unset: ModelOptions' default (on above a 32k vocabulary)
  int threads = 0;
  std::string model_path;     // fine-tune from here, or
  nlohmann::json model_init;  // initialise this architecture (null when model_path is set)
  std::string tokenizer;
  DataConfig data;
  int seq_len = 256, micro_batch = 4, grad_accum = 1;
  int64_t max_steps = 0;
  double epochs = 1.0;
  float lr = 3e-4f;
  AdamWConfig adamw;
  ScheduleConfig schedule;
  std::string loss = "token";  // loss.average: token | sequence
  float residual_dropout = 0;  // the top layer's (linear) or every layer's (constant) probability
  std::string residual_dropout_schedule = "linear";  // linear | constant
  float neftune_alpha = 0;
  int64_t log_every = 10, eval_every = 0, eval_batches = 0, save_every = 0;
  int keep_last = 2;
  std::string on_save_error = "stop";  // stop | continue
  std::vector<std::string> sample_prompts;
  int sample_max_tokens = 64;
  int max_bad_steps = 5;
  DistributedConfig distributed;
  LoraConfig lora;  // r == 0: no LoRA
  // Not a YAML field: a run option of `ift train --resume-anyway` (resume although the checkpoint's
  // config differs in fields that change the result).
  bool resume_anyway = false;

  // Parses YAML text; `where` names the source in errors. `overrides` are "key.sub=value" strings
  // applied before validation (values parsed as YAML scalars or flow sequences).
  static TrainConfig parse(const std::string& yaml_text, const std::string& where,
                           const std::vector<std::string>& overrides = {});
  static TrainConfig load(const std::filesystem::path& path, const std::vector<std::string>& overrides = {});
  // The resolved configuration as YAML (every field), saved beside checkpoints.
  std::string to_yaml() const;
};

// The warm-up steps of a run of `total` steps: warmup_steps, or ceil(warmup_ratio * total) as
// Hugging Face's Trainer computes it.
int64_t warmup_steps(const TrainConfig& c, int64_t total);

// The residual dropout probability of each of n_layers layers: LIMA's rule for `linear` (layer l of
// L gets p * l / (L - 1): 0 at the bottom, p at the top; p for a single layer), p everywhere for
// `constant`. Empty when residual_dropout is 0.
std::vector<float> residual_dropout_per_layer(const TrainConfig& c, int n_layers);

// Learning rate at optimizer step `step` (0-based) of `total`: linear warm-up from lr/warmup to lr,
// then cosine or linear decay towards min_lr (reached just after the last step, as in Hugging
// Face's schedulers), or constant.
float learning_rate(const TrainConfig& c, int64_t step, int64_t total);

// The fields (dotted keys) in which two resolved configs (to_yaml text) differ and that change
// what training computes: everything but where and how often it logs, evaluates, samples and saves,
// and the thread count (results do not depend on it).
std::vector<std::string> result_changing_differences(const std::string& saved_yaml, const std::string& current_yaml);

}  // namespace ift
