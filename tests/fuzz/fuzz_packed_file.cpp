// The packed-file reader: magic, version, section sizes against the file length, checksum, row
// index. A file that opens is read row by row.
#include "data/packed_file.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = ift::fuzz::write_input("train.pack", ift::fuzz::text(data, size));
  for (bool verify : {false, true}) {
    ift::fuzz::expect_ok_or_error([&] {
      const ift::PackedFile f(path, verify);
      for (int64_t r = 0; r < f.n_rows(); ++r) {
        const auto tokens = f.row_tokens(r);
        const auto trained = f.row_trained(r);
        uint64_t sum = 0;
        for (uint32_t n : f.row_sample_lengths(r)) sum += n;
        IFT_CHECK(tokens.size() == trained.size() && sum == tokens.size(), "fuzz: row ", r, " inconsistent");
      }
    });
  }
  return 0;
}
