// safetensors reader: header length cap, JSON header, dtypes, shapes, data offsets (overlaps, gaps,
// truncation). A valid file is read back tensor by tensor.
#include "engine/safetensors.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = ift::fuzz::write_input("input.safetensors", ift::fuzz::text(data, size));
  ift::fuzz::expect_ok_or_error([&] {
    const ift::SafetensorsReader r(path);
    for (const ift::TensorInfo& t : r.tensors()) (void)r.read_f32(t.name);
  });
  return 0;
}
