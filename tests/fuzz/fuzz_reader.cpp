// The instruction-data readers: Alpaca, ShareGPT and messages records, as JSONL or a JSON array,
// in every format and both bad-record policies.
#include "data/reader.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = ift::fuzz::text(data, size);
  for (ift::Format f : {ift::Format::auto_detect, ift::Format::alpaca, ift::Format::sharegpt, ift::Format::messages}) {
    for (ift::OnBad b : {ift::OnBad::skip, ift::OnBad::error}) {
      ift::fuzz::expect_ok_or_error([&] {
        ift::ReadStats stats;
        const auto convs = ift::read_conversations_text(in, "fuzz.jsonl", f, b, stats);
        IFT_CHECK(stats.records >= static_cast<int64_t>(convs.size()) + stats.bad, "fuzz: record counts");
        for (const auto& c : convs) IFT_CHECK(!c.turns.empty(), "fuzz: a conversation without turns");
      });
    }
  }
  return 0;
}
