// Architecture presets for the commands that take `--model DIR|ARCH` (bench, info): a model
// directory's config.json, or a named architecture initialised randomly.
#pragma once

#include <string>

#include "engine/config.h"

namespace ift {

// DIR/config.json when `name` is a directory; else one of gpt2-124m, gpt2-small-6l, llama-demo,
// tinyllama-1.1b, llama2-7b (ift::Error naming the choices otherwise).
ModelConfig model_config_or_preset(const std::string& name);

}  // namespace ift
