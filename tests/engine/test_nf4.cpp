// NF4 (engine/nf4.h) against an independent reference: tools/golden/make_nf4_golden.py (numpy, its
// own copy of the QLoRA code book) quantized random tensors of awkward lengths; ift must give the
// same codes bitwise, the same absmax to the last bit, and the same dequantized values.
#include <cstring>

#include "engine/nf4.h"
#include "engine/safetensors.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

TEST_CASE("nf4: codes and absmax equal the numpy reference bitwise", "[nf4]") {
  const SafetensorsReader r(fixture("nf4/nf4.safetensors"));
  const std::vector<float> book = r.read_f32("code_book");
  REQUIRE(book.size() == 16);
  for (int c = 0; c < 16; ++c) CHECK(book[c] == nf4_code_book()[c]);
  for (const char* name : {"normal_1000", "normal_4096", "heavy_129", "tiny_5"}) {
    INFO(name);
    const std::string n = name;
    const std::vector<float> x = r.read_f32(n + ".x"), absmax = r.read_f32(n + ".absmax");
    const std::vector<float> codes = r.read_f32(n + ".codes"), deq = r.read_f32(n + ".dequant");
    const Nf4Tensor q = nf4_quantize(x);
    REQUIRE(q.absmax.size() == absmax.size());
    for (size_t b = 0; b < absmax.size(); ++b) CHECK(std::memcmp(&q.absmax[b], &absmax[b], 4) == 0);
    size_t wrong = 0;
    for (size_t i = 0; i < x.size(); ++i) wrong += q.code(i) != static_cast<uint8_t>(codes[i]);
    CHECK(wrong == 0);
    std::vector<float> back(x.size());
    nf4_dequantize(q, back);
    CHECK(back == deq);
    CHECK(q.packed.size() == (x.size() + 1) / 2);
  }
  CHECK(nf4_bytes(4096) == 2048 + 64 * 4);
  const std::vector<float> bad = {1.0f, NAN};
  CHECK_THROWS_WITH(nf4_quantize(bad), Catch::Contains("value 1 is not finite"));
}
