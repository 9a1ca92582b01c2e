// Model weights in Hugging Face's safetensors layout: names, shapes and the Conv1D transposition
// come from the ParamLayout's views, so a model trained here opens in transformers unchanged.
#pragma once

#include <filesystem>
#include <list>
#include <span>
#include <string>
#include <vector>

#include "engine/params.h"
#include "engine/safetensors.h"

namespace ift {

// "[2, 3]": a shape as error messages print it.
std::string shape_str(const std::vector<int64_t>& shape);

// Reads every parameter of `layout` from `file` into `params` (converted to T). GPT-2 names are
// accepted with or without the "transformer." prefix, and the attention-mask buffers old GPT-2 and
// Llama files carry are ignored. A tensor that is missing, mis-shaped or unknown is an error naming
// it and the file. When the head is tied, an "lm_head.weight" in the file is ignored.
template <class T>
void load_weights(const std::filesystem::path& file, const ParamLayout& layout, std::span<T> params);
// The same into a new fp32 flat buffer: what Model::load_params takes, whatever the backend.
std::vector<float> read_weights(const std::filesystem::path& file, const ParamLayout& layout);

// A set of named tensors to write in one file, viewing or owning their data.
class TensorSet {
 public:
  void add(std::string name, std::vector<int64_t> shape, std::span<const float> data);  // data must outlive the set
  void add(std::string name, std::vector<int64_t> shape, std::vector<float> data);      // owned
  // Every view of `layout` over the flat buffer `flat`, in Hugging Face layout, names prefixed.
  void add_params(const ParamLayout& layout, std::span<const float> flat, const std::string& prefix = "");
  const std::vector<TensorToWrite>& tensors() const { return tensors_; }

 private:
  std::list<std::vector<float>> owned_;  // a list: the spans into its vectors stay valid as it grows
  std::vector<TensorToWrite> tensors_;
};

}  // namespace ift
