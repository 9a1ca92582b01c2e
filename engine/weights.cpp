#include "engine/weights.h"

#include <set>

#include "engine/base/error.h"

namespace ift {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

namespace {

// Buffers some writers save next to the parameters; they carry no trained state.
bool ignorable(const std::string& name) {
  return name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") || name.ends_with("rotary_emb.inv_freq");
}

}  // namespace

template <class T>
void load_weights(const std::filesystem::path& file, const ParamLayout& layout, std::span<T> params) {
  IFT_CHECK(params.size() == layout.total, "load_weights: buffer of ", params.size(), " values for a model of ",
            layout.total);
  const SafetensorsReader reader(file);
  std::set<std::string> used;
  std::vector<float> values;
  for (const ParamView& v : layout.views) {
    const TensorInfo* t = reader.find(v.name);
    std::string stored = v.name;
    if (!t && v.name.starts_with("transformer.")) {  // GPT-2's original files have bare names
      stored = v.name.substr(std::string("transformer.").size());
      t = reader.find(stored);
    }
    IFT_CHECK(t, file.string(), ": tensor '", v.name, "' is missing");
    IFT_CHECK(t->shape == v.shape, file.string(), ": tensor '", stored, "' has shape ", shape_str(t->shape),
              ", the config needs ", shape_str(v.shape));
    values.resize(t->numel());
    reader.read_f32(stored, values);
    T* dst = params.data() + v.offset;
    if (v.transposed) {  // stored (rows, cols) there, (cols, rows) here
      const int64_t rows = v.shape[0], cols = v.shape[1];
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) dst[c * rows + r] = static_cast<T>(values[r * cols + c]);
    } else {
      for (size_t i = 0; i < values.size(); ++i) dst[i] = static_cast<T>(values[i]);
    }
    used.insert(stored);
  }
  const bool tied = layout.lm_head == layout.wte;
  for (const TensorInfo& t : reader.tensors()) {
    if (used.count(t.name) || ignorable(t.name) || (tied && t.name == "lm_head.weight")) continue;
    fail(file.string(), ": tensor '", t.name, "' is not part of this model (check config.json)");
  }
}

template void load_weights<float>(const std::filesystem::path&, const ParamLayout&, std::span<float>);

std::vector<float> read_weights(const std::filesystem::path& file, const ParamLayout& layout) {
  std::vector<float> values(layout.total);
  load_weights<float>(file, layout, values);
  return values;
}
template void load_weights<double>(const std::filesystem::path&, const ParamLayout&, std::span<double>);

void TensorSet::add(std::string name, std::vector<int64_t> shape, std::span<const float> data) {
  tensors_.push_back({std::move(name), std::move(shape), data});
}

void TensorSet::add(std::string name, std::vector<int64_t> shape, std::vector<float> data) {
  owned_.push_back(std::move(data));
  tensors_.push_back({std::move(name), std::move(shape), owned_.back()});
}

void TensorSet::add_params(const ParamLayout& layout, std::span<const float> flat, const std::string& prefix) {
  IFT_CHECK(flat.size() == layout.total, "add_params: buffer of ", flat.size(), " values for a model of ",
            layout.total);
  for (const ParamView& v : layout.views) {
    const float* src = flat.data() + v.offset;
    if (!v.transposed) {
      add(prefix + v.name, v.shape, std::span<const float>(src, v.numel()));
      continue;
    }
    const int64_t rows = v.shape[0], cols = v.shape[1];
    std::vector<float> t(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) t[r * cols + c] = src[c * rows + r];
    add(prefix + v.name, v.shape, std::move(t));
  }
}

}  // namespace ift
