// `ift dump`: one batch through a model, writing loss, logits and every parameter gradient under
// its Hugging Face name: the debug state llm.c keeps, and how the model is checked against
// transformers (tests/fixtures/golden).
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "engine/lora.h"
#include "engine/lora_files.h"
#include "engine/model.h"
#include "engine/weights.h"
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/presets.h"

namespace ift::cmd {

namespace {

using nlohmann::json;

// The batch file in Hugging Face's convention, flattened for the model.
struct DumpBatch {
  int B = 0, T = 0;
  std::vector<int32_t> tokens, targets, positions, cu_seqlens;
};

std::vector<std::vector<int32_t>> int_rows(const json& j, const char* key, const std::string& file) {
  IFT_CHECK(j.contains(key), file, ": field '", key, "' is missing");
  const json& rows = j[key];
  IFT_CHECK(rows.is_array() && !rows.empty(), file, ": field '", key, "' must be a non-empty list of lists");
  std::vector<std::vector<int32_t>> out;
  for (size_t r = 0; r < rows.size(); ++r) {
    IFT_CHECK(rows[r].is_array(), file, ": ", key, "[", r, "] must be a list of integers");
    std::vector<int32_t> row;
    for (size_t t = 0; t < rows[r].size(); ++t) {
      IFT_CHECK(rows[r][t].is_number_integer(), file, ": ", key, "[", r, "][", t, "] must be an integer, got ",
                rows[r][t].dump());
      row.push_back(rows[r][t].get<int32_t>());
    }
    out.push_back(std::move(row));
  }
  return out;
}

DumpBatch read_batch(const std::string& file) {
  std::ifstream in(file);
  IFT_CHECK(in, file, ": cannot open");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::parse_error& e) {
    fail(file, ": not valid JSON (", e.what(), ")");
  }
  IFT_CHECK(j.is_object(), file, ": expected an object with input_ids and labels");
  const auto ids = int_rows(j, "input_ids", file);
  const auto labels = int_rows(j, "labels", file);
  DumpBatch b;
  b.B = static_cast<int>(ids.size());
  b.T = static_cast<int>(ids[0].size());
  IFT_CHECK(b.T > 0, file, ": input_ids[0] is empty");
  IFT_CHECK(labels.size() == ids.size(), file, ": labels has ", labels.size(), " rows, input_ids ", ids.size());
  std::vector<std::vector<int32_t>> pos, lens;
  if (j.contains("position_ids")) pos = int_rows(j, "position_ids", file);
  if (j.contains("seq_lens")) lens = int_rows(j, "seq_lens", file);
  IFT_CHECK(pos.empty() || pos.size() == ids.size(), file, ": position_ids needs one row per input_ids row");
  IFT_CHECK(lens.empty() || lens.size() == ids.size(), file, ": seq_lens needs one row per input_ids row");
  b.cu_seqlens = {0};
  for (int r = 0; r < b.B; ++r) {
    IFT_CHECK(int(ids[r].size()) == b.T && int(labels[r].size()) == b.T && (pos.empty() || int(pos[r].size()) == b.T),
              file, ": row ", r, " of input_ids/labels/position_ids does not have ", b.T, " entries like row 0");
    std::vector<int32_t> row_lens = lens.empty() ? std::vector<int32_t>{b.T} : lens[r];
    int sum = 0;
    for (int32_t len : row_lens) {
      IFT_CHECK(len > 0, file, ": seq_lens[", r, "] holds a length ", len, " (must be positive)");
      for (int i = 0; i < len && sum + i < b.T; ++i) b.positions.push_back(i);
      sum += len;
      b.cu_seqlens.push_back(r * b.T + std::min(sum, b.T));
    }
    IFT_CHECK(sum == b.T, file, ": seq_lens[", r, "] sums to ", sum, ", the row has ", b.T, " tokens");
    if (!pos.empty()) std::copy(pos[r].begin(), pos[r].end(), b.positions.end() - b.T);
    for (int t = 0; t < b.T; ++t) {
      b.tokens.push_back(ids[r][t]);
      // Hugging Face shifts inside the model: row t predicts labels[t + 1]; -100 is ignored.
      const int32_t next = t + 1 < b.T ? labels[r][t + 1] : -100;
      IFT_CHECK(next >= 0 || next == -100, file, ": labels[", r, "][", t + 1, "] is ", next,
                " (a token id or -100)");
      b.targets.push_back(next);
    }
  }
  return b;
}

}  // namespace

int dump(Args args) {
  cli::Parser p("ift dump", "Run one batch through a model and write its loss, logits and every parameter gradient.\n"
                            "The batch follows Hugging Face: labels aligned with input_ids, shifted inside, -100 ignored;\n"
                            "optional position_ids, and seq_lens (per row, the lengths of the samples packed into it:\n"
                            "attention never crosses them and positions restart at each).");
  p.option("--model", "DIR", "model directory: config.json + model.safetensors (GPT-2 or Llama layout)", cli::required);
  p.option("--batch", "FILE.json", "{\"input_ids\": [[...]], \"labels\": [[...]], ...}", cli::required);
  p.option("--out", "FILE.safetensors", "output: loss, logits [B,T,V] (unless the loss is fused) and grad.<name> for every parameter",
           cli::required);
  p.option("--backend", "NAME", "cpu", "backend that runs the batch: cpu, emu (the kernels in the emulator), cuda");
  p.option("--precision", "P", "fp32", "fp32, or bf16 (mixed precision; emu and cuda backends)");
  add_model_option_flags(p);
  p.option("--adapter", "DIR", "", "a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) run on\n"
                                   "the base unmerged; gradients are then written for the adapter tensors only");
  p.option("--quantize", "none|nf4", "none", "with --adapter: the base's projections in NF4, quantized as a training\n"
                                             "run with lora.quantize: nf4 does (QLoRA)");
  if (!p.parse(args)) return 0;
  const BackendKind kind = parse_backend(p.str("--backend"));
  const Precision precision = parse_precision(p.str("--precision"));

  const std::filesystem::path dir = p.str("--model");
  LoraConfig lora;
  ModelConfig config = ModelConfig::load(dir / "config.json");
  ParamLayout layout;
  std::vector<float> weights;
  if (p.str("--adapter").empty()) {
    layout = ParamLayout::build(config);
    weights = read_weights(dir / "model.safetensors", layout);
  } else {
    BaseWithAdapter m = load_base_with_adapter(dir, p.str("--adapter"));
    config = m.config, lora = m.lora, layout = std::move(m.layout), weights = std::move(m.flat);
  }
  // The flat layout is the same with an NF4 base (only where the backend keeps the projections moves).
  lora.quantize = p.str("--quantize");
  IFT_CHECK(lora.quantize == "none" || lora.enabled(), "--quantize ", lora.quantize,
            " needs --adapter: an NF4 base is frozen under adapters");
  if (lora.enabled()) lora.check(config, "--quantize");
  const DumpBatch b = read_batch(p.str("--batch"));
  const BatchView view{b.B * b.T, b.tokens, b.targets, b.positions, b.cu_seqlens};
  const int64_t trained = view.trained_tokens();
  IFT_CHECK(trained > 0, p.str("--batch"), ": no label is a trained token (all are -100 after the shift)");

  TensorSet out;
  std::vector<float> grads;  // outlives `out`, which views it
  const double loss = with_backend(kind, precision, [&]<class B>() {
    ModelOptions options = model_options(p);
    options.lora = lora;
    Model<B> model(config, options);
    model.load_params(weights);
    const double l = model.forward(view, static_cast<double>(trained));
    if (options.fused(config))  // the fused cross-entropy never holds them
      std::printf("no logits written: the fused cross-entropy keeps none (--no-fused-ce writes them)\n");
    else
      out.add("logits", {b.B, b.T, config.vocab_size}, model.logits_to_host());  // before backward overwrites them
    model.backward();
    grads = model.grads_to_host();
    return l;
  });
  if (lora.enabled()) {  // the base is frozen: the adapters' gradients, under PEFT's names
    for (const ParamView& v : layout.adapter_views)
      out.add("grad." + v.name, v.shape, std::span<const float>(grads).subspan(v.offset, size_t(v.numel())));
  } else {
    out.add_params(layout, grads, "grad.");
  }
  out.add("loss", {}, std::vector<float>{static_cast<float>(loss)});
  write_safetensors(p.str("--out"), out.tensors(), DType::F32,
                    {{"format", "ift-dump"}, {"backend", name_of(kind)}, {"precision", name_of(precision)}});
  std::printf("loss %.6f over %lld trained tokens (%s, %s); wrote %s\n", loss, static_cast<long long>(trained),
              name_of(kind), name_of(precision), p.str("--out").c_str());
  return 0;
}

}  // namespace ift::cmd
