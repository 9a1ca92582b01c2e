// Architecture presets for the commands that take `--model DIR|ARCH` (bench, info): a model
// directory's config.json, or a named architecture initialised randomly.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/config.h"
#include "engine/model.h"
#include "tools/cli.h"

namespace ift {

// DIR/config.json when `name` is a directory; else one of gpt2-124m, gpt2-small-6l, llama-demo,
// tinyllama-1.1b, llama2-7b, llama3-8b, llama-128k (ift::Error naming the choices otherwise).
ModelConfig model_config_or_preset(const std::string& name);

// The ModelOptions flags of dump, info and bench train: --recompute, --fused-ce / --no-fused-ce
// (neither: the default, on above a 32k vocabulary) and --fused-ce-chunk ROWS.
void add_model_option_flags(cli::Parser& p);
ModelOptions model_options(const cli::Parser& p);

// The LoRA flags of info and bench train: --lora-r R (alpha 2R; 0: a full fine-tune),
// --lora-targets a,b,.. (default: every projection of the family) and --nf4 (an NF4 base, QLoRA),
// checked against `config`.
void add_lora_option_flags(cli::Parser& p);
LoraConfig lora_options(const cli::Parser& p, const ModelConfig& config);

// B rows of T random tokens (fixed seed), each row one sample trained on every next token: the
// batch the benchmarks and `ift info --measure` time.
struct RandomBatch {
  std::vector<int32_t> tokens, targets, positions, cu_seqlens;
  BatchView view() const { return {static_cast<int>(tokens.size()), tokens, targets, positions, cu_seqlens}; }
};
RandomBatch random_batch(int vocab_size, int B, int T, uint32_t seed = 0);

}  // namespace ift
