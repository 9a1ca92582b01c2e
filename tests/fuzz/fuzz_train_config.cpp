// The YAML training config (`ift train CONFIG.yaml`): unknown keys, types, values; the resolved
// config it writes beside checkpoints parses again.
#include "engine/train/train_config.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ift::fuzz::expect_ok_or_error([&] {
    const ift::TrainConfig c = ift::TrainConfig::parse(std::string(ift::fuzz::text(data, size)), "fuzz.yaml");
    (void)ift::TrainConfig::parse(c.to_yaml(), "resolved.yaml");
  });
  return 0;
}
