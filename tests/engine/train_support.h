// What the trainer tests read back from a run: the losses of metrics.jsonl and a checkpoint's weights.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/safetensors.h"

namespace ift::test {

namespace fs = std::filesystem;

// Single quotes for a path in a shell command (the test paths hold no quote).
inline std::string shell_quote(const std::string& s) { return "'" + s + "'"; }

inline std::vector<double> losses(const fs::path& metrics) {
  std::vector<double> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

inline std::vector<float> weights(const fs::path& checkpoint) {
  const SafetensorsReader r(checkpoint / "model.safetensors");
  std::vector<float> all;
  for (const TensorInfo& t : r.tensors()) {
    const std::vector<float> v = r.read_f32(t.name);
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

}  // namespace ift::test
