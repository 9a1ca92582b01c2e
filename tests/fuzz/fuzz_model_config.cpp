// config.json of a Hugging Face model: every family's fields, derived settings, bad values.
#include <nlohmann/json.hpp>

#include "engine/config.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = ift::fuzz::write_input("config.json", ift::fuzz::text(data, size));
  ift::fuzz::expect_ok_or_error([&] {
    const ift::ModelConfig c = ift::ModelConfig::load(path);
    (void)ift::ModelConfig::from_json(c.to_json());  // what ift writes, it reads back
  });
  return 0;
}
