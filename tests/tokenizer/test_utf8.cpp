// UTF-8 validation and replacement, against what Python's errors="replace" gives.
#include "tests/support.h"
#include "tokenizer/utf8.h"

namespace ift {
namespace {

TEST_CASE("utf8 validation follows the Unicode table of well-formed sequences", "[utf8]") {
  CHECK(utf8::is_valid(""));
  CHECK(utf8::is_valid("plain ascii"));
  CHECK(utf8::is_valid("caf\xc3\xa9 \xe4\xbd\xa0 \xf0\x9f\x98\x80"));
  CHECK(!utf8::is_valid("\xc0\xaf"));          // overlong
  CHECK(!utf8::is_valid("\xed\xa0\x80"));      // surrogate
  CHECK(!utf8::is_valid("\xf4\x90\x80\x80"));  // past U+10FFFF
  CHECK(!utf8::is_valid("\xe4\xbd"));          // truncated
  CHECK(!utf8::is_valid("\x80"));              // stray continuation
}

TEST_CASE("utf8 sanitize replaces maximal subparts like Python", "[utf8]") {
  const std::string r = "\xEF\xBF\xBD";
  // b"...".decode("utf-8", "replace") gives these.
  CHECK(utf8::sanitize("a\xffz") == "a" + r + "z");
  CHECK(utf8::sanitize("\xe4\xbd") == r);            // one truncated sequence: one U+FFFD
  CHECK(utf8::sanitize("\xe4\xbd" "a") == r + "a");
  CHECK(utf8::sanitize("\xed\xa0\x80") == r + r + r);  // surrogate: lead byte alone is the subpart
  CHECK(utf8::sanitize("\xc0\xaf") == r + r);
  CHECK(utf8::sanitize("\xf0\x9f\x98") == r);
  CHECK(utf8::sanitize("ok \xf0\x9f\x98\x80") == "ok \xf0\x9f\x98\x80");
}

}  // namespace
}  // namespace ift
