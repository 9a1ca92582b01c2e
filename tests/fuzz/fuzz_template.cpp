// Chat templates: the first byte picks the kind, the rest is the template: even, a YAML template
// (template_from_yaml); odd, a Jinja chat template (data/jinja.*). A template that loads renders a
// few conversations (single and multi-turn, with system prompt and Alpaca input) in every mask mode.
#include "data/template.h"
#include "tests/data/byte_tokenizer.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in = ift::fuzz::text(data + 1, size - 1);
  static const ift::test::ByteTokenizer tok;
  using ift::Role;
  static const std::vector<ift::Conversation> convs = {
      {"", {{Role::user, "Hi", ""}, {Role::assistant, "Hello!", ""}}, "fuzz:1"},
      {"Be brief.", {{Role::user, "Add", "2 and 3"}, {Role::assistant, "5", ""}, {Role::user, "Again", ""},
                     {Role::assistant, "5 again", ""}}, "fuzz:2"}};
  ift::fuzz::expect_ok_or_error([&] {
    ift::Template t;
    if (data[0] % 2 == 0) {
      t = ift::template_from_yaml(in, "fuzz.yaml");
    } else {
      t.name = "fuzz.jinja";
      t.jinja = std::string(in);
    }
    const ift::ChatFormatter f(t, tok);
    for (const auto& c : convs)
      for (ift::MaskMode m : {ift::MaskMode::outputs, ift::MaskMode::all, ift::MaskMode::last}) {
        const ift::Sample s = f.render(c, m);
        IFT_CHECK(s.tokens.size() == s.trained.size(), "fuzz: mask and tokens differ in length");
      }
  });
  return 0;
}
