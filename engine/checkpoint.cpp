#include "engine/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <fstream>

#include "engine/base/error.h"
#include "engine/base/io.h"
#include "engine/base/sha256.h"
#include "engine/lora.h"
#include "engine/safetensors.h"
#include "engine/weights.h"

namespace ift {

namespace fs = std::filesystem;

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

void write_checkpoint(const fs::path& dir, const CheckpointContents& c) {
  IFT_ASSERT(c.config && c.layout);
  const fs::path parent = dir.parent_path().empty() ? fs::path(".") : dir.parent_path();
  fs::create_directories(parent);
  const fs::path tmp = parent / (".tmp-" + dir.filename().string());
  fs::remove_all(tmp);
  try {
    fs::create_directories(tmp);
    const bool lora = c.lora && c.lora->enabled();
    if (lora) {
      write_peft_adapter(tmp, *c.layout, c.params, *c.lora, *c.config, c.base_path);
    } else {
      write_text_atomically(tmp / "config.json", c.config->to_json().dump(2) + "\n");
      TensorSet weights;
      weights.add_params(*c.layout, c.params);
      write_safetensors(tmp / "model.safetensors", weights.tensors(), DType::F32, {{"format", "pt"}});
    }
    // Under the names Hugging Face looks for: a sentencepiece model is always tokenizer.model.
    for (const fs::path& f : c.tokenizer_files)
      copy_file_atomically(f, tmp / (f.extension() == ".model" ? fs::path("tokenizer.model") : f.filename()));
    if (c.optimizer) {
      const OptimizerState& opt = *c.optimizer;
      // The moments of the trainable parameters only (a LoRA run's: the adapters'), packed; the
      // metadata says which ranges of the flat layout they are.
      IFT_ASSERT(opt.m.size() == opt.packed.size() && opt.v.size() == opt.packed.size());
      const int64_t n = static_cast<int64_t>(opt.m.size());
      TensorSet state;
      state.add("adamw.m", {n}, std::span<const float>(opt.m));
      state.add("adamw.v", {n}, std::span<const float>(opt.v));
      std::string ranges;
      for (const PackedRanges::Range& r : opt.packed.ranges)
        ranges += (ranges.empty() ? "" : ",") + std::to_string(r.begin) + ":" + std::to_string(r.end);
      write_safetensors(tmp / "optimizer.safetensors", state.tensors(), DType::F32,
                        {{"steps", std::to_string(opt.steps)}, {"ranges", ranges}});
    }
    if (!c.trainer_state.is_null()) write_text_atomically(tmp / "trainer_state.json", c.trainer_state.dump(2) + "\n");
    if (!c.config_yaml.empty()) write_text_atomically(tmp / "config.yaml", c.config_yaml);
    // Last: the sha256 of every file above, checked when the checkpoint is loaded.
    nlohmann::json sums = nlohmann::json::object();
    for (const auto& e : fs::directory_iterator(tmp)) sums[e.path().filename().string()] = sha256_file(e.path());
    write_text_atomically(tmp / kChecksumsFile, sums.dump(2) + "\n");
    sync_directory(tmp);
  } catch (const std::exception& e) {
    // A full disk (ENOSPC), a failing device (EIO): nothing half-written stays behind, and the
    // checkpoints already under `parent` were never touched.
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fail("checkpoint ", dir.string(), " not written: ", e.what(), "; the previous checkpoints are intact");
  }

  if (fs::exists(dir)) {  // replace: move the old one aside first, rename cannot overwrite a directory
    const fs::path old = parent / (".old-" + dir.filename().string());
    fs::remove_all(old);
    fs::rename(dir, old);
    fs::rename(tmp, dir);
    fs::remove_all(old);
  } else {
    fs::rename(tmp, dir);
  }
  sync_directory(parent);
}

void verify_checkpoint(const fs::path& dir) {
  const fs::path manifest = dir / kChecksumsFile;
  IFT_CHECK(fs::exists(manifest), manifest.string(), ": missing, so the checkpoint cannot be verified");
  nlohmann::json sums;
  try {
    sums = nlohmann::json::parse(read_text(manifest));
  } catch (const nlohmann::json::exception& e) {
    fail(manifest.string(), ": not valid JSON (", e.what(), ")");
  }
  IFT_CHECK(sums.is_object() && !sums.empty(), manifest.string(), ": expected an object of file name -> sha256");
  for (const auto& [name, want] : sums.items()) {
    const fs::path f = dir / name;
    IFT_CHECK(want.is_string(), manifest.string(), ": the sha256 of ", name, " must be a string");
    IFT_CHECK(fs::exists(f), f.string(), ": listed in ", kChecksumsFile, " but missing (a partial copy?)");
    const std::string got = sha256_file(f);
    IFT_CHECK(got == want.get<std::string>(), f.string(), ": sha256 ", got, " differs from the ",
              want.get<std::string>(), " recorded when the checkpoint was written: the file changed since");
  }
}

std::vector<fs::path> list_checkpoints(const fs::path& root) {
  std::vector<fs::path> out;
  if (!fs::is_directory(root)) return out;
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory() && e.path().filename().string().starts_with("step-") &&
        (fs::exists(e.path() / "model.safetensors") || is_adapter_dir(e.path())))
      out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

void prune_checkpoints(const fs::path& root, int keep) {
  const std::vector<fs::path> all = list_checkpoints(root);
  for (size_t i = 0; i + keep < all.size(); ++i) fs::remove_all(all[i]);
  if (!fs::is_directory(root)) return;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(".tmp-") || name.starts_with(".old-")) fs::remove_all(e.path());
  }
}

bool is_adapter_dir(const fs::path& dir) { return fs::exists(dir / "adapter_model.safetensors"); }

fs::path adapter_base(const fs::path& adapter_dir) {
  const fs::path f = adapter_dir / "adapter_config.json";
  std::string base;
  try {
    base = nlohmann::json::parse(read_text(f)).value("base_model_name_or_path", "");
  } catch (const nlohmann::json::exception& e) {
    fail(f.string(), ": not valid JSON (", e.what(), ")");
  }
  IFT_CHECK(!base.empty(), f.string(), ": base_model_name_or_path is empty; pass the base as --model and this as --adapter");
  return base;
}

fs::path resolve_model_dir(const fs::path& dir) {
  if (fs::exists(dir / "model.safetensors") || is_adapter_dir(dir)) return dir;
  const std::vector<fs::path> all = list_checkpoints(dir / "checkpoints");
  IFT_CHECK(!all.empty(), dir.string(), ": neither a model directory (model.safetensors) nor a run with checkpoints");
  return all.back();
}

OptimizerState load_optimizer_state(const fs::path& dir) {
  const SafetensorsReader r(dir / "optimizer.safetensors");
  OptimizerState optimizer;
  optimizer.m = r.read_f32("adamw.m");
  optimizer.v = r.read_f32("adamw.v");
  const auto it = r.metadata().find("steps");
  IFT_CHECK(it != r.metadata().end(), r.path().string(), ": metadata 'steps' is missing");
  optimizer.steps = std::stoll(it->second);
  const std::string where = r.path().string() + ": metadata 'ranges'";
  if (const auto rs = r.metadata().find("ranges"); rs != r.metadata().end()) {
    // "begin:end,begin:end,...": the flat ranges the packed moments cover.
    size_t at = 0;
    const std::string& text = rs->second;
    while (at < text.size()) {
      const size_t comma = std::min(text.find(',', at), text.size()), colon = text.find(':', at);
      IFT_CHECK(colon < comma, where, ": '", text.substr(at, comma - at), "' is not begin:end");
      PackedRanges::Range range;
      try {
        range.begin = std::stoull(text.substr(at, colon - at));
        range.end = std::stoull(text.substr(colon + 1, comma - colon - 1));
      } catch (const std::exception&) {
        fail(where, ": '", text.substr(at, comma - at), "' is not begin:end");
      }
      IFT_CHECK(range.begin < range.end &&
                    (optimizer.packed.ranges.empty() || optimizer.packed.ranges.back().end < range.begin),
                where, ": the ranges must be non-empty and increasing, got '", text, "'");
      optimizer.packed.ranges.push_back(range);
      at = comma + 1;
    }
  } else {
    // Checkpoints written before the ranges: the moments cover [first, first + n), first 0 or a
    // LoRA run's base size.
    const auto f = r.metadata().find("first");
    const size_t first = f == r.metadata().end() ? 0 : std::stoull(f->second);
    if (!optimizer.m.empty()) optimizer.packed.ranges.push_back({first, first + optimizer.m.size()});
  }
  IFT_CHECK(optimizer.m.size() == optimizer.packed.size() && optimizer.v.size() == optimizer.packed.size(),
            r.path().string(), ": adamw.m and adamw.v hold ", optimizer.m.size(), " and ", optimizer.v.size(),
            " values, the ranges ", optimizer.packed.size());
  return optimizer;
}

nlohmann::json load_trainer_state(const fs::path& dir) {
  const fs::path p = dir / "trainer_state.json";
  std::ifstream in(p);
  IFT_CHECK(in, p.string(), ": cannot open");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    fail(p.string(), ": not valid JSON (", e.what(), ")");
  }
}

}  // namespace ift
