// SHA-256 against the FIPS 180-2 example vectors, across chunked updates, and of a file.
#include <fstream>

#include "engine/base/sha256.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;

TEST_CASE("sha256: the standard's examples, in any chunking, and of a file", "[sha256]") {
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";  // 56 bytes: padding spills
  CHECK(sha256_hex(two_blocks) == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  CHECK(sha256_hex(million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  for (size_t chunk : {size_t(1), size_t(63), size_t(64), size_t(65), size_t(4097)}) {
    Sha256 s;
    for (size_t i = 0; i < million.size(); i += chunk) s.update(million.data() + i, std::min(chunk, million.size() - i));
    INFO("chunk " << chunk);
    CHECK(s.hex() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  }
  const auto file = temp_dir("sha256") / "abc.txt";
  std::ofstream(file, std::ios::binary) << "abc";
  CHECK(sha256_file(file) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK_THROWS_WITH(sha256_file(file.string() + ".missing"), Catch::Contains("abc.txt.missing"));
}
