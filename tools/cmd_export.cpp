// `ift export --merge`: a LoRA run (or a base plus a PEFT adapter) as one merged Hugging Face model
// directory: config.json, model.safetensors with W + s B A folded into every adapted projection,
// and the tokenizer's files.
#include <cstdio>
#include <filesystem>

#include "engine/base/error.h"
#include "engine/base/io.h"
#include "engine/checkpoint.h"
#include "engine/lora.h"
#include "engine/lora_files.h"
#include "engine/safetensors.h"
#include "engine/weights.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace ift::cmd {

namespace fs = std::filesystem;

int export_model(Args args) {
  cli::Parser p("ift export", "Write a LoRA run's model with its adapters merged, as a Hugging Face model directory.");
  p.option("--model", "DIR", "a LoRA run or checkpoint (the base it names), or a base model with --adapter",
           cli::required);
  p.option("--adapter", "DIR", "", "a PEFT adapter directory to merge into --model");
  p.flag("--merge", "fold the adapters into the base weights (required: ift writes merged models only)");
  p.option("--out", "DIR", "output directory (config.json, model.safetensors, tokenizer files)", cli::required);
  if (!p.parse(args)) return 0;
  IFT_CHECK(p.on("--merge"), "ift export: pass --merge (an adapter directory is already what PEFT loads unmerged)");
  fs::path base = resolve_model_dir(p.str("--model")), adapter = p.str("--adapter");
  if (adapter.empty()) {
    IFT_CHECK(is_adapter_dir(base), base.string(), ": not a LoRA run or adapter (no adapter_model.safetensors); "
              "give the adapter with --adapter");
    adapter = base;
    base = resolve_model_dir(adapter_base(adapter));
  }
  if (fs::exists(adapter / kChecksumsFile)) verify_checkpoint(adapter);
  const BaseWithAdapter m = load_base_with_adapter(base, adapter);
  const std::vector<float> merged = merge_lora(m.layout, m.flat);
  const fs::path out = p.str("--out");
  fs::create_directories(out);
  write_text_atomically(out / "config.json", m.config.to_json().dump(2) + "\n");
  TensorSet weights;
  weights.add_params(m.layout, merged);
  write_safetensors(out / "model.safetensors", weights.tensors(), DType::F32, {{"format", "pt"}});
  // The tokenizer: what the checkpoint carries, else the base's files.
  int copied = 0;
  for (const fs::path& dir : {adapter, base}) {
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (name.starts_with("tokenizer") || name == "vocab.json" || name == "merges.txt" ||
          name == "special_tokens_map.json") {
        fs::copy_file(e.path(), out / name, fs::copy_options::overwrite_existing);
        ++copied;
      }
    }
    if (copied) break;
  }
  std::printf("merged %zu adapters (r %d, scale %g) of %s into %s -> %s\n", m.layout.adapters.size(), m.lora.r,
              m.lora.scale(), adapter.c_str(), base.c_str(), out.c_str());
  return 0;
}

}  // namespace ift::cmd
