#include "data/packed_file.h"

#include <fstream>

#include "engine/base/error.h"
#include "tests/support.h"

using namespace ift;

namespace {

std::vector<Sample> some_samples() {
  std::vector<Sample> s(4);
  s[0] = {{1, 2, 3}, {0, 1, 1}};
  s[1] = {{4, 5}, {0, 1}};
  s[2] = {{6, 7, 8, 9}, {0, 0, 1, 1}};
  s[3] = {{10}, {0}};
  return s;
}

PackedMeta meta() {
  PackedMeta m;
  m.seq_len = 8;
  m.vocab_size = 16;
  m.pad_id = 0;
  m.tokenizer_hash = 0x1234;
  m.tokenizer_id = "tokenizer test";
  return m;
}

const std::vector<std::vector<int32_t>> kRows = {{2, 3}, {0, 1}};

void flip_byte(const std::filesystem::path& p, std::streamoff at) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(at);
  char c = 0;
  f.read(&c, 1);
  c ^= 0x40;
  f.seekp(at);
  f.write(&c, 1);
}

size_t files_in(const std::filesystem::path& dir) {
  return static_cast<size_t>(std::distance(std::filesystem::directory_iterator(dir), {}));
}

}  // namespace

TEST_CASE("packed file round trip through mmap", "[packed_file]") {
  const auto dir = test::temp_dir("packed");
  write_packed_file(dir / "a.pack", meta(), kRows, some_samples());
  CHECK(files_in(dir) == 1);  // no temp file left behind
  const PackedFile f(dir / "a.pack");
  const PackedHeader& h = f.header();
  CHECK(h.version == kPackedVersion);
  CHECK(h.seq_len == 8);
  CHECK(h.vocab_size == 16);
  CHECK(h.n_rows == 2);
  CHECK(h.n_samples == 4);
  CHECK(h.n_tokens == 10);
  CHECK(h.n_trained == 5);
  CHECK(h.tokenizer_hash == 0x1234);
  CHECK(std::string(h.tokenizer_id) == "tokenizer test");
  auto vec = [](auto span) { return std::vector<std::decay_t<decltype(span[0])>>(span.begin(), span.end()); };
  CHECK(vec(f.row_sample_lengths(0)) == std::vector<uint32_t>{4, 1});
  CHECK(vec(f.row_tokens(0)) == std::vector<int32_t>{6, 7, 8, 9, 10});
  CHECK(vec(f.row_trained(0)) == std::vector<uint8_t>{0, 0, 1, 1, 0});
  CHECK(vec(f.row_sample_lengths(1)) == std::vector<uint32_t>{3, 2});
  CHECK(vec(f.row_tokens(1)) == std::vector<int32_t>{1, 2, 3, 4, 5});
  CHECK_THROWS_AS(f.row_tokens(2), Error);
}

TEST_CASE("packed file: corruption, truncation and wrong files are errors", "[packed_file]") {
  using Catch::Matchers::Contains;
  const auto dir = test::temp_dir("packed-bad");
  const auto p = dir / "a.pack";
  write_packed_file(p, meta(), kRows, some_samples());
  const auto size = std::filesystem::file_size(p);

  flip_byte(p, static_cast<std::streamoff>(size) - 3);
  CHECK_THROWS_WITH(PackedFile(p), Contains("checksum mismatch"));
  CHECK_NOTHROW(PackedFile(p, /*verify=*/false));

  std::filesystem::resize_file(p, size - 1);
  CHECK_THROWS_WITH(PackedFile(p), Contains("truncated or corrupt"));

  std::ofstream(dir / "b.pack") << std::string(300, 'x');
  CHECK_THROWS_WITH(PackedFile(dir / "b.pack"), Contains("bad magic"));
  CHECK_THROWS_WITH(PackedFile(dir / "missing.pack"), Contains("cannot open"));
}

TEST_CASE("packed file is written atomically", "[packed_file]") {
  const auto dir = test::temp_dir("packed-atomic");
  const auto p = dir / "a.pack";
  write_packed_file(p, meta(), kRows, some_samples());
  const auto before = std::filesystem::file_size(p);

  // A failing write (a token outside the vocabulary) leaves the old file as it was, and no temp file.
  auto bad = some_samples();
  bad[0].tokens[0] = 99;
  CHECK_THROWS_WITH(write_packed_file(p, meta(), kRows, bad), Catch::Matchers::Contains("outside the vocabulary"));
  CHECK(std::filesystem::file_size(p) == before);
  CHECK_NOTHROW(PackedFile(p));
  CHECK(files_in(dir) == 1);

  // A failing rename (the target is a non-empty directory) removes the temp file.
  std::filesystem::create_directories(dir / "d.pack" / "x");
  CHECK_THROWS_WITH(write_packed_file(dir / "d.pack", meta(), kRows, some_samples()),
                    Catch::Matchers::Contains("cannot rename"));
  CHECK(files_in(dir) == 2);  // a.pack and the directory
  // A row longer than seq_len is refused.
  CHECK_THROWS_WITH(write_packed_file(dir / "c.pack", meta(), {{0, 1, 2}}, some_samples()),
                    Catch::Matchers::Contains("more than seq_len"));
}
