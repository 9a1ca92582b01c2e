// Tokenizer files: the first byte picks the loader, the rest is the file: 0 tokenizer.json,
// 1 vocab.json + merges.txt (split at the first NUL byte), 2 a sentencepiece .model. A tokenizer that
// loads encodes and decodes a few strings.
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in = ift::fuzz::text(data + 1, size - 1);
  std::filesystem::path path;
  switch (data[0] % 3) {
    case 0: path = ift::fuzz::write_input("tokenizer.json", in); break;
    case 1: {
      const size_t nul = in.find('\0');
      path = ift::fuzz::write_input("vocab.json", in.substr(0, nul));
      ift::fuzz::write_input("merges.txt", nul == std::string_view::npos ? std::string_view() : in.substr(nul + 1));
      break;
    }
    default: path = ift::fuzz::write_input("tokenizer.model", in); break;
  }
  ift::fuzz::expect_ok_or_error([&] {
    const auto tok = ift::load_tokenizer(path);
    for (std::string_view s : {"Hello, world! 123", " \n\t  x", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "<s></s><|im_end|>",
                               "\xff\xfe invalid"}) {
      const std::vector<int32_t> ids = tok->encode(s, true);
      for (int32_t id : ids) IFT_CHECK(id >= 0 && id < tok->vocab_size(), "fuzz: id ", id, " outside the vocabulary");
      (void)tok->decode(ids);
      (void)tok->encode_with_offsets(s, false);
    }
  });
  return 0;
}
