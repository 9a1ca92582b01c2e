// engine/safetensors: fp16/bf16 conversion, round trips, files written by Python's safetensors,
// every malformed-file error, and the golden fixtures' layout.
#include "engine/safetensors.h"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "tests/support.h"

using namespace ift;
using ift::test::fixture;
using ift::test::temp_dir;

// The largest single operator new since the last reset, kept by the replacement operator new of
// this test binary (test_backends.cpp).
namespace ift::test {
extern std::atomic<size_t> g_largest_new;
}
using ift::test::g_largest_new;

namespace {

uint32_t bits(float f) { return std::bit_cast<uint32_t>(f); }
float from_bits(uint32_t u) { return std::bit_cast<float>(u); }
bool is_nan_bf16(uint16_t h) { return (h & 0x7F80u) == 0x7F80u && (h & 0x7Fu) != 0; }
bool is_nan_f16(uint16_t h) { return (h & 0x7C00u) == 0x7C00u && (h & 0x3FFu) != 0; }

// Runs `body`, which must throw ift::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& body, std::initializer_list<std::string> parts) {
  std::string message;
  try {
    body();
  } catch (const Error& e) {
    message = e.what();
  }
  INFO("error message: " << (message.empty() ? "(nothing thrown)" : message));
  REQUIRE(!message.empty());
  for (const std::string& part : parts) {
    INFO("expected to contain: " << part);
    CHECK(message.find(part) != std::string::npos);
  }
}

// A raw safetensors file: the 8-byte length, the header text as given (not padded), the data bytes.
void write_raw(const std::filesystem::path& path, const std::string& header, size_t data_bytes,
               uint64_t header_len_override = 0) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t n = header_len_override ? header_len_override : header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  out << std::string(data_bytes, '\0');
}

// Reference narrowing by exhaustive comparison in double: the representable neighbours of x are
// found from a sorted table of every finite non-negative value, then the nearer one wins, ties to
// the even encoding. Independent of the bit tricks in the implementation.
struct NarrowReference {
  std::vector<double> values;  // values[h] for h = 0 .. largest finite encoding
  uint16_t inf_bits;
  double overflow_at;  // |x| at or above this becomes infinity (halfway past the largest finite)

  NarrowReference(std::function<float(uint16_t)> widen, uint16_t inf) : inf_bits(inf) {
    for (uint32_t h = 0; h < inf; ++h) values.push_back(widen(static_cast<uint16_t>(h)));
    const double top = values.back(), below = values[values.size() - 2];
    overflow_at = top + (top - below) / 2;
  }

  uint16_t operator()(float x) const {
    const uint16_t sign = std::signbit(x) ? 0x8000u : 0u;
    const double a = std::abs(static_cast<double>(x));
    if (a >= overflow_at) return sign | inf_bits;
    if (a >= values.back()) return sign | static_cast<uint16_t>(values.size() - 1);
    const auto hi = std::lower_bound(values.begin(), values.end(), a);
    if (*hi == a) return sign | static_cast<uint16_t>(hi - values.begin());
    const auto lo = hi - 1;
    const double dlo = a - *lo, dhi = *hi - a;
    const auto below = static_cast<uint16_t>(lo - values.begin());
    const bool take_below = dlo < dhi || (dlo == dhi && below % 2 == 0);
    return sign | static_cast<uint16_t>(take_below ? below : below + 1);
  }
};

// Random float bit patterns concentrated where a 16-bit format has interesting values, plus some
// anywhere; no NaNs (checked separately).
std::vector<float> probe_floats(int low_exp, int high_exp, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> out;
  while (out.size() < n) {
    uint32_t u = static_cast<uint32_t>(rng());
    if (out.size() % 2 == 0) {  // exponent in the format's range, random mantissa and sign
      const uint32_t e = static_cast<uint32_t>(low_exp + static_cast<int>(rng() % (high_exp - low_exp + 1)));
      u = (u & 0x807FFFFFu) | (e << 23);
    }
    if (out.size() % 7 == 0) u &= ~0x0FFFu;  // more exact ties and near-ties
    const float f = from_bits(u);
    if (!std::isnan(f)) out.push_back(f);
  }
  return out;
}

}  // namespace

TEST_CASE("safetensors dtype names and sizes") {
  CHECK(dtype_name(DType::F32) == "F32");
  CHECK(dtype_name(DType::F16) == "F16");
  CHECK(dtype_name(DType::BF16) == "BF16");
  CHECK(dtype_size(DType::F32) == 4);
  CHECK(dtype_size(DType::F16) == 2);
  CHECK(dtype_size(DType::BF16) == 2);
  TensorInfo t;
  CHECK(t.numel() == 1);  // a scalar
  t.shape = {3, 0, 2};
  CHECK(t.numel() == 0);
  t.shape = {3, 5, 2};
  CHECK(t.numel() == 30);
}

TEST_CASE("bf16 conversion: special values and ties") {
  CHECK(float_to_bf16(1.0f) == 0x3F80);
  CHECK(float_to_bf16(-2.0f) == 0xC000);
  CHECK(float_to_bf16(0.0f) == 0x0000);
  CHECK(float_to_bf16(-0.0f) == 0x8000);
  CHECK(float_to_bf16(std::numeric_limits<float>::infinity()) == 0x7F80);
  CHECK(float_to_bf16(-std::numeric_limits<float>::infinity()) == 0xFF80);
  // Ties go to the even encoding.
  CHECK(float_to_bf16(from_bits(0x3F808000u)) == 0x3F80);  // 1 + 2^-8: halfway, 0x3F80 is even
  CHECK(float_to_bf16(from_bits(0x3F818000u)) == 0x3F82);  // halfway, 0x3F82 is even
  CHECK(float_to_bf16(from_bits(0x3F808001u)) == 0x3F81);  // just above halfway
  CHECK(float_to_bf16(from_bits(0x3F807FFFu)) == 0x3F80);  // just below halfway
  // Rounding carries into the exponent, and past the largest finite bf16 into infinity.
  CHECK(float_to_bf16(from_bits(0x3FFFFFFFu)) == 0x4000);
  CHECK(float_to_bf16(std::numeric_limits<float>::max()) == 0x7F80);
  CHECK(float_to_bf16(from_bits(0x7F7F7FFFu)) == 0x7F7F);  // largest value that stays finite
  // Denormals are kept, not flushed.
  CHECK(float_to_bf16(from_bits(0x00010000u)) == 0x0001);
  CHECK(float_to_bf16(from_bits(0x00008000u)) == 0x0000);  // tie between 0 and the smallest denormal
  CHECK(float_to_bf16(from_bits(0x00018000u)) == 0x0002);
  CHECK(float_to_bf16(from_bits(0x80010000u)) == 0x8001);
  CHECK(bf16_to_float(0x0001) == from_bits(0x00010000u));
  // NaN stays NaN, whatever its payload (a payload only in the low bits must not become infinity),
  // and keeps its sign.
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0x7F80FFFFu, 0xFFC00000u, 0xFF800001u}) {
    const uint16_t h = float_to_bf16(from_bits(nan));
    INFO("nan bits " << std::hex << nan << " -> " << h);
    CHECK(is_nan_bf16(h));
    CHECK((h >> 15) == (nan >> 31));
    CHECK(std::isnan(bf16_to_float(h)));
  }
  CHECK(std::isinf(bf16_to_float(0x7F80)));
  CHECK(std::signbit(bf16_to_float(0x8000)));
}

TEST_CASE("bf16 conversion: every bf16 round-trips and narrowing matches an exhaustive reference") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_float(static_cast<uint16_t>(h));
    if (is_nan_bf16(static_cast<uint16_t>(h))) {
      REQUIRE(std::isnan(f));
      REQUIRE(is_nan_bf16(float_to_bf16(f)));
    } else {
      INFO("bf16 " << std::hex << h);
      REQUIRE(float_to_bf16(f) == h);
    }
  }
  const NarrowReference reference(bf16_to_float, 0x7F80);
  size_t bad = 0;
  for (float x : probe_floats(1, 254, 400000, 7)) {
    const uint16_t want = reference(x), got = float_to_bf16(x);
    if (got != want && bad++ < 5) FAIL_CHECK("bf16 of " << std::hexfloat << x << ": got " << got << ", want " << want);
  }
  CHECK(bad == 0);
}

TEST_CASE("f16 conversion: special values, denormals, overflow") {
  CHECK(float_to_f16(1.0f) == 0x3C00);
  CHECK(float_to_f16(-2.0f) == 0xC000);
  CHECK(float_to_f16(0.0f) == 0x0000);
  CHECK(float_to_f16(-0.0f) == 0x8000);
  CHECK(float_to_f16(65504.0f) == 0x7BFF);
  CHECK(float_to_f16(65519.996f) == 0x7BFF);
  CHECK(float_to_f16(65520.0f) == 0x7C00);  // halfway to 2^16: ties to even, which is infinity
  CHECK(float_to_f16(-1e10f) == 0xFC00);
  CHECK(float_to_f16(std::numeric_limits<float>::infinity()) == 0x7C00);
  CHECK(float_to_f16(0x1p-14f) == 0x0400);  // smallest normal
  CHECK(float_to_f16(0x1p-24f) == 0x0001);  // smallest denormal
  CHECK(float_to_f16(0x1p-25f) == 0x0000);  // tie between 0 and 2^-24: even is 0
  CHECK(float_to_f16(0x1.8p-24f) == 0x0002);  // tie between 1 and 2 denormal units: even is 2
  CHECK(float_to_f16(0x1.000002p-25f) == 0x0001);
  CHECK(float_to_f16(0x1.ff8p-15f) == 0x03FF);  // the largest denormal
  CHECK(float_to_f16(0x1.ffcp-15f) == 0x0400);  // halfway above it: rounds up into the normals
  CHECK(float_to_f16(-0x1p-24f) == 0x8001);
  CHECK(float_to_f16(1e-30f) == 0x0000);
  CHECK(float_to_f16(1.0f + 0x1p-11f) == 0x3C00);  // tie, 0x3C00 even
  CHECK(float_to_f16(1.0f + 0x3p-11f) == 0x3C02);  // tie, 0x3C02 even

  CHECK(f16_to_float(0x3C00) == 1.0f);
  CHECK(f16_to_float(0x0001) == 0x1p-24f);
  CHECK(f16_to_float(0x03FF) == 0x1.ff8p-15f);
  CHECK(f16_to_float(0x7BFF) == 65504.0f);
  CHECK(f16_to_float(0x7C00) == std::numeric_limits<float>::infinity());
  CHECK(f16_to_float(0xFC00) == -std::numeric_limits<float>::infinity());
  CHECK(std::signbit(f16_to_float(0x8000)));
  CHECK(f16_to_float(0x8000) == 0.0f);
  for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0xFFC00000u}) {
    const uint16_t h = float_to_f16(from_bits(nan));
    CHECK(is_nan_f16(h));
    CHECK((h >> 15) == (nan >> 31));
  }
  CHECK(std::isnan(f16_to_float(0x7E00)));
  CHECK(std::isnan(f16_to_float(0x7C01)));
}

TEST_CASE("f16 conversion: every half round-trips and narrowing matches an exhaustive reference") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = f16_to_float(static_cast<uint16_t>(h));
    if (is_nan_f16(static_cast<uint16_t>(h))) {
      REQUIRE(std::isnan(f));
      REQUIRE(is_nan_f16(float_to_f16(f)));
    } else {
      INFO("f16 " << std::hex << h);
      REQUIRE(float_to_f16(f) == h);
    }
  }
  const NarrowReference reference(f16_to_float, 0x7C00);
  size_t bad = 0;
  // Float exponents 100..145 cover zero-rounding, denormals, normals and overflow of half.
  for (float x : probe_floats(100, 145, 400000, 11)) {
    const uint16_t want = reference(x), got = float_to_f16(x);
    if (got != want && bad++ < 5) FAIL_CHECK("f16 of " << std::hexfloat << x << ": got " << got << ", want " << want);
  }
  CHECK(bad == 0);
}

TEST_CASE("safetensors round trip in F32, BF16 and F16") {
  const auto dir = temp_dir("st-roundtrip");
  // Values across a wide range, with the awkward ones spliced in.
  auto a = ift::test::random_vector<float>(3 * 5, 1, -100.0, 100.0);
  a[0] = 0.0f, a[1] = -0.0f, a[2] = std::numeric_limits<float>::infinity(), a[3] = 1e-41f, a[4] = 65520.0f;
  const auto b = ift::test::random_vector<float>(7, 2);
  const std::vector<float> scalar = {3.25f};
  const std::vector<TensorToWrite> tensors = {
      {"z.last", {3, 5}, a},
      {"a.first", {7}, b},
      {"scalar", {}, scalar},
      {"empty", {0, 4}, {}},
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"step", "12"}};

  for (DType dtype : {DType::F32, DType::BF16, DType::F16}) {
    INFO("dtype " << dtype_name(dtype));
    const auto path = dir / (std::string(dtype_name(dtype)) + ".safetensors");
    write_safetensors(path, tensors, dtype, metadata);
    const SafetensorsReader r(path);
    CHECK(r.path() == path);
    CHECK(r.metadata() == metadata);
    // Laid out by name: zero-size "empty" first (at offset 0, with a.first), then the rest.
    std::vector<std::string> names;
    for (const TensorInfo& t : r.tensors()) names.push_back(t.name);
    CHECK(names == std::vector<std::string>{"a.first", "empty", "scalar", "z.last"});
    CHECK(r.at("z.last").shape == std::vector<int64_t>{3, 5});
    CHECK(r.at("scalar").shape.empty());
    CHECK(r.at("empty").numel() == 0);
    CHECK(r.at("z.last").dtype == dtype);
    CHECK(r.find("missing") == nullptr);
    CHECK(r.find("a.first") == &r.at("a.first"));

    for (const TensorToWrite& t : tensors) {
      const std::vector<float> got = r.read_f32(t.name);
      REQUIRE(got.size() == t.data.size());
      for (size_t i = 0; i < got.size(); ++i) {
        const float x = t.data[i];
        const float want = dtype == DType::F32    ? x
                           : dtype == DType::BF16 ? bf16_to_float(float_to_bf16(x))
                                                  : f16_to_float(float_to_f16(x));
        INFO(t.name << "[" << i << "] = " << x);
        CHECK(bits(got[i]) == bits(want));  // bit-exact, -0 and inf included
      }
    }
    std::vector<float> into(15);
    r.read_f32("z.last", into);
    CHECK(bits(into[1]) == bits(-0.0f));

    // Header padded with spaces to a multiple of 8, so the data section is 8-byte aligned.
    std::ifstream in(path, std::ios::binary);
    uint64_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 8);
    CHECK(n % 8 == 0);
    std::string header(n, '\0');
    in.read(header.data(), static_cast<std::streamsize>(n));
    CHECK(nlohmann::json::parse(header)["__metadata__"]["step"] == "12");
  }

  SECTION("empty metadata is omitted, and the old file is replaced whole") {
    const auto path = dir / "F32.safetensors";
    write_safetensors(path, std::span(tensors).first(1));
    const SafetensorsReader r(path);
    CHECK(r.tensors().size() == 1);
    CHECK(r.metadata().empty());
    std::ifstream in(path, std::ios::binary);
    const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(all.find("__metadata__") == std::string::npos);
  }
  SECTION("no temporary files are left behind") {
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      CHECK(entry.path().filename().string().find(".tmp.") == std::string::npos);
  }
  SECTION("a file with no tensors") {
    const auto path = dir / "none.safetensors";
    write_safetensors(path, {});
    CHECK(SafetensorsReader(path).tensors().empty());
  }
  SECTION("a reader can be moved") {
    SafetensorsReader r(dir / "BF16.safetensors");
    SafetensorsReader moved(std::move(r));
    CHECK(moved.read_f32("scalar") == std::vector<float>{3.25f});
    r = std::move(moved);
    CHECK(r.read_f32("scalar") == std::vector<float>{3.25f});
  }
}

TEST_CASE("safetensors writer errors name the path and tensor - a failed write leaves the old file") {
  const auto dir = temp_dir("st-write-errors");
  const auto path = dir / "out.safetensors";
  const std::vector<float> six(6, 1.0f), five(5, 2.0f);
  const std::vector<TensorToWrite> good = {{"w", {2, 3}, six}};
  write_safetensors(path, good);

  const std::vector<TensorToWrite> mismatch = {{"w", {2, 3}, five}};
  expect_error([&] { write_safetensors(path, mismatch); }, {path.string(), "'w'", "[2, 3]", "5 values"});
  const std::vector<TensorToWrite> twice = {{"w", {6}, six}, {"w", {5}, five}};
  expect_error([&] { write_safetensors(path, twice); }, {path.string(), "'w'", "twice"});
  const std::vector<TensorToWrite> negative = {{"w", {-1, 6}, six}};
  expect_error([&] { write_safetensors(path, negative); }, {path.string(), "'w'", "invalid shape"});
  const std::vector<TensorToWrite> reserved = {{"__metadata__", {6}, six}};
  expect_error([&] { write_safetensors(path, reserved); }, {path.string(), "reserved"});
  const std::vector<TensorToWrite> not_utf8 = {{"w\xff", {6}, six}};
  expect_error([&] { write_safetensors(path, not_utf8); }, {path.string(), "UTF-8"});
  const auto nowhere = dir / "no-such-dir" / "out.safetensors";
  expect_error([&] { write_safetensors(nowhere, good); }, {nowhere.string(), "cannot create"});

  CHECK(SafetensorsReader(path).read_f32("w") == six);
}

TEST_CASE("safetensors reads files written by Python's safetensors") {
  const SafetensorsReader r(fixture("safetensors/python.safetensors"));
  CHECK(r.metadata().at("source") == "tests/fixtures/safetensors/make_fixture.py");
  std::vector<std::string> names;
  for (const TensorInfo& t : r.tensors()) names.push_back(t.name);
  // In data order, which is Python's layout (by dtype, then name), not alphabetical.
  CHECK(names == std::vector<std::string>{"empty", "f32", "scalar", "bf16", "f16"});

  CHECK(r.at("f32").shape == std::vector<int64_t>{2, 3});
  CHECK(r.read_f32("f32") == std::vector<float>{-0.5f, -0.25f, 0.0f, 0.25f, 0.5f, 0.75f});
  CHECK(r.at("scalar").shape.empty());
  CHECK(r.read_f32("scalar") == std::vector<float>{7.5f});
  CHECK(r.at("empty").shape == std::vector<int64_t>{0, 4});
  CHECK(r.read_f32("empty").empty());

  // torch rounded these; ift's conversion of the same inputs must give the same bits.
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> bf16_in = {1.0f, -2.5f, 3.140625f, 1.0f + 0x1p-8f, 1.0f + 0x3p-8f, inf, -0.0f, 1e-40f, -3e38f, 0.1f};
  CHECK(r.at("bf16").dtype == DType::BF16);
  CHECK(r.at("bf16").shape == std::vector<int64_t>{2, 5});
  const auto bf16 = r.read_f32("bf16");
  for (size_t i = 0; i < bf16_in.size(); ++i) {
    INFO("bf16[" << i << "] from " << bf16_in[i]);
    CHECK(bits(bf16[i]) == bits(bf16_to_float(float_to_bf16(bf16_in[i]))));
  }
  CHECK(bf16[3] == 1.0f);
  CHECK(bf16[4] == 1.015625f);

  const std::vector<float> f16_in = {1.0f, -2.0f, 65504.0f, 70000.0f, 0x1p-24f, 0x1p-25f, 0x3p-25f, 0.1f, -0.0f, 1.0f + 0x1p-11f};
  CHECK(r.at("f16").dtype == DType::F16);
  const auto f16 = r.read_f32("f16");
  for (size_t i = 0; i < f16_in.size(); ++i) {
    INFO("f16[" << i << "] from " << f16_in[i]);
    CHECK(bits(f16[i]) == bits(f16_to_float(float_to_f16(f16_in[i]))));
  }
  CHECK(f16[3] == inf);
  CHECK(f16[6] == 0x1p-23f);

  const auto i64 = fixture("safetensors/python_i64.safetensors");
  expect_error([&] { SafetensorsReader{i64}; }, {i64.string(), "'ids'", "unsupported dtype 'I64'"});
}

TEST_CASE("safetensors rejects malformed files with errors that name the problem") {
  const auto dir = temp_dir("st-malformed");
  const auto path = dir / "bad.safetensors";
  const std::string file = path.string();
  auto open = [&] { SafetensorsReader{path}; };
  auto tensor = [](const std::string& name, const std::string& dtype, const std::string& shape, uint64_t b, uint64_t e) {
    return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
           std::to_string(b) + "," + std::to_string(e) + "]}";
  };

  SECTION("valid baseline") {
    write_raw(path, "{" + tensor("a", "F32", "[2]", 0, 8) + "," + tensor("b", "F16", "[3]", 8, 14) + "}", 14);
    const SafetensorsReader r(path);
    CHECK(r.tensors().size() == 2);
  }
  SECTION("missing file") {
    expect_error(open, {file, "cannot open"});
  }
  SECTION("shorter than the length field") {
    std::ofstream(path, std::ios::binary) << "abc";
    expect_error(open, {file, "truncated", "3 bytes"});
  }
  SECTION("truncated inside the header") {
    write_raw(path, "{\"a\":", 0, 100);
    expect_error(open, {file, "truncated", "header length 100"});
  }
  SECTION("truncated data") {
    const std::vector<float> v(16, 1.0f);
    write_safetensors(path, std::vector<TensorToWrite>{{"w", {16}, v}});
    std::filesystem::resize_file(path, std::filesystem::file_size(path) - 5);
    expect_error(open, {file, "truncated", "need 64 bytes", "only 59"});
  }
  SECTION("huge header length") {
    write_raw(path, "{}", 0, uint64_t(1) << 40);
    expect_error(open, {file, "header length 1099511627776", "exceeds the limit"});
  }
  SECTION("header not JSON") {
    write_raw(path, "{\"a\": {\"dtype\": \"F32\", oops", 0);
    expect_error(open, {file, "not valid JSON"});
  }
  SECTION("header not an object") {
    write_raw(path, "[1, 2]", 0);
    expect_error(open, {file, "must be a JSON object", "array"});
  }
  SECTION("unknown dtype") {
    write_raw(path, "{" + tensor("w", "F31", "[2]", 0, 8) + "}", 8);
    expect_error(open, {file, "'w'", "unsupported dtype 'F31'"});
  }
  SECTION("byte count does not match shape and dtype") {
    write_raw(path, "{" + tensor("w", "BF16", "[2, 3]", 0, 24) + "}", 24);
    expect_error(open, {file, "'w'", "byte count mismatch", "needs 12 bytes", "hold 24"});
  }
  SECTION("overlapping offsets") {
    write_raw(path, "{" + tensor("a", "F32", "[2]", 0, 8) + "," + tensor("b", "F32", "[2]", 4, 12) + "}", 12);
    expect_error(open, {file, "'b'", "overlaps tensor 'a'"});
  }
  SECTION("gap between tensors") {
    write_raw(path, "{" + tensor("a", "F32", "[2]", 0, 8) + "," + tensor("b", "F32", "[2]", 12, 20) + "}", 20);
    expect_error(open, {file, "gap of 4 bytes", "'b'", "'a' ends at 8"});
  }
  SECTION("gap before the first tensor") {
    write_raw(path, "{" + tensor("a", "F32", "[2]", 4, 12) + "}", 12);
    expect_error(open, {file, "gap of 4 bytes", "'a'", "must begin at 0"});
  }
  SECTION("bytes left over after the last tensor") {
    write_raw(path, "{" + tensor("a", "F32", "[2]", 0, 8) + "}", 16);
    expect_error(open, {file, "8 bytes after the last tensor"});
  }
  SECTION("offsets end before they begin") {
    write_raw(path, "{" + tensor("a", "F32", "[0]", 8, 0) + "}", 8);
    expect_error(open, {file, "'a'", "end before they begin"});
  }
  SECTION("negative or fractional shape") {
    write_raw(path, "{" + tensor("a", "F32", "[-2]", 0, 8) + "}", 8);
    expect_error(open, {file, "'a'", "non-negative integers"});
    write_raw(path, "{" + tensor("a", "F32", "[2.5]", 0, 8) + "}", 8);
    expect_error(open, {file, "'a'", "non-negative integers"});
  }
  SECTION("shape whose byte count overflows") {
    write_raw(path, "{" + tensor("a", "F32", "[4294967296, 4294967296]", 0, 0) + "}", 0);
    expect_error(open, {file, "'a'", "overflows"});
  }
  SECTION("duplicate tensor name") {
    write_raw(path, "{" + tensor("a", "F32", "[2]", 0, 8) + "," + tensor("a", "F32", "[2]", 8, 16) + "}", 16);
    expect_error(open, {file, "'a'", "appears twice"});
  }
  SECTION("missing field") {
    write_raw(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 0);
    expect_error(open, {file, "'a'", "data_offsets"});
  }
  SECTION("metadata must map strings to strings") {
    write_raw(path, "{\"__metadata__\":{\"step\":12}}", 0);
    expect_error(open, {file, "__metadata__", "'step'", "must be a string"});
  }
  SECTION("missing tensor via at() and a wrong destination size") {
    const std::vector<float> v(6, 1.0f);
    write_safetensors(path, std::vector<TensorToWrite>{{"w", {2, 3}, v}});
    const SafetensorsReader r(path);
    expect_error([&] { r.at("lm_head.weight"); }, {file, "no tensor named 'lm_head.weight'"});
    expect_error([&] { r.read_f32("nope"); }, {file, "'nope'"});
    std::vector<float> small(5);
    expect_error([&] { r.read_f32("w", small); }, {file, "'w'", "6 elements", "holds 5"});
  }
}

// Hostile sizes cost nothing: a 10 GB header length and a billion-element shape (4 GB of F32 the
// file does not hold) are refused from the 8-byte length and the header alone, before any buffer of
// that size is allocated (the largest allocation stays under 1 MiB).
TEST_CASE("safetensors: a 10 GB header length or a billion-element shape is refused before any allocation") {
  const auto dir = temp_dir("st-bounded");
  const auto path = dir / "hostile.safetensors";
  auto open = [&] { SafetensorsReader r(path); };
  const std::string billion = R"({"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}})";
  const std::string billion_2d = R"({"w":{"dtype":"F32","shape":[100000,100000],"data_offsets":[0,64]}})";
  struct Case {
    std::string header;
    uint64_t header_len;
    std::initializer_list<std::string> parts;
  };
  for (const Case& c : {Case{"{}", 10'000'000'000ull, {"header length 10000000000", "exceeds the limit"}},
                        Case{billion, 0, {"truncated", "the tensors need 4000000000 bytes"}},
                        Case{billion_2d, 0, {"'w'", "byte count mismatch", "40000000000 bytes"}}}) {
    INFO(c.header);
    write_raw(path, c.header, 64, c.header_len);
    g_largest_new = 0;
    expect_error(open, c.parts);
    CHECK(g_largest_new.load() < (size_t(1) << 20));
  }
}

TEST_CASE("safetensors golden fixtures open and hold every parameter's gradient") {
  for (const std::string name : {"gpt2", "llama_gqa", "llama_tied", "llama_packed", "gpt2_packed"}) {
    INFO("golden case " << name);
    const auto dir = fixture("golden/" + name);
    nlohmann::json config, batch;
    std::ifstream(dir / "config.json") >> config;
    std::ifstream(dir / "batch.json") >> batch;
    const int64_t vocab = config["vocab_size"], rows = batch["input_ids"].size(),
                  cols = batch["input_ids"][0].size();
    CHECK(batch["labels"].size() == static_cast<size_t>(rows));
    const bool gpt2 = config["model_type"] == "gpt2";
    const bool tied = gpt2 || config["tie_word_embeddings"].get<bool>();
    const int64_t hidden = gpt2 ? config["n_embd"] : config["hidden_size"];

    const SafetensorsReader model(dir / "model.safetensors");
    const SafetensorsReader expected(dir / "expected.safetensors");
    CHECK(model.metadata().at("format") == "pt");
    CHECK(expected.at("loss").shape.empty());
    CHECK(expected.at("logits").shape == std::vector<int64_t>{rows, cols, vocab});
    CHECK(std::isfinite(expected.read_f32("loss")[0]));

    const std::string embed = gpt2 ? "transformer.wte.weight" : "model.embed_tokens.weight";
    CHECK(model.at(embed).shape == std::vector<int64_t>{vocab, hidden});
    CHECK((model.find("lm_head.weight") == nullptr) == tied);
    if (gpt2) {  // Conv1D stores [in, out]
      CHECK(model.at("transformer.h.0.attn.c_attn.weight").shape == std::vector<int64_t>{hidden, 3 * hidden});
      CHECK(model.at("transformer.h.1.mlp.c_fc.weight").shape == std::vector<int64_t>{hidden, 4 * hidden});
    } else {
      const int64_t head_dim = hidden / config["num_attention_heads"].get<int64_t>();
      const int64_t kv = config["num_key_value_heads"].get<int64_t>() * head_dim;
      CHECK(model.at("model.layers.1.self_attn.k_proj.weight").shape == std::vector<int64_t>{kv, hidden});
      CHECK(model.at("model.layers.0.mlp.down_proj.weight").shape ==
            std::vector<int64_t>{hidden, config["intermediate_size"].get<int64_t>()});
    }

    // Exactly one gradient per saved parameter, with its shape; nothing else besides loss and logits.
    for (const TensorInfo& t : model.tensors()) {
      INFO("parameter " << t.name);
      CHECK(t.dtype == DType::F32);
      const TensorInfo* g = expected.find("grad." + t.name);
      REQUIRE(g != nullptr);
      CHECK(g->shape == t.shape);
    }
    CHECK(expected.tensors().size() == model.tensors().size() + 2);
  }
}
