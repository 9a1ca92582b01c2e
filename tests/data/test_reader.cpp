#include "data/reader.h"

#include <chrono>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "tests/support.h"

using namespace ift;

namespace {

std::vector<Conversation> read(const std::string& text, Format f = Format::auto_detect) {
  ReadStats stats;
  return read_conversations_text(text, "mem.jsonl", f, OnBad::error, stats);
}

// The message of the error reading `text` throws with OnBad::error.
std::string error_of(const std::string& text, Format f = Format::auto_detect) {
  ReadStats stats;
  try {
    read_conversations_text(text, "bad.jsonl", f, OnBad::error, stats);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("alpaca JSONL with and without input and system", "[reader]") {
  const auto cs = read(
      R"({"instruction": "Add.", "input": "2 and 3", "output": "5"})"
      "\n\n"
      R"({"instruction": "Greet.", "output": "Hi", "system": "Be kind."})"
      "\n");
  REQUIRE(cs.size() == 2);
  CHECK(cs[0].system.empty());
  REQUIRE(cs[0].turns.size() == 2);
  CHECK(cs[0].turns[0].role == Role::user);
  CHECK(cs[0].turns[0].text == "Add.");
  CHECK(cs[0].turns[0].input == "2 and 3");
  CHECK(cs[0].turns[1].role == Role::assistant);
  CHECK(cs[0].turns[1].text == "5");
  CHECK(cs[0].where == "mem.jsonl:1");
  CHECK(cs[1].system == "Be kind.");
  CHECK(cs[1].turns[0].input.empty());
  CHECK(cs[1].where == "mem.jsonl:3");  // the blank line still counts
}

TEST_CASE("alpaca JSON array keeps each record's line", "[reader]") {
  const auto cs = read("[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n  {\"instruction\": \"c [x]\",\n"
                       "   \"input\": \"}{,\", \"output\": \"d \\\" ]\"}\n]\n");
  REQUIRE(cs.size() == 2);
  CHECK(cs[0].where == "mem.jsonl:2");
  CHECK(cs[1].where == "mem.jsonl:3");
  CHECK(cs[1].turns[0].input == "}{,");
  CHECK(cs[1].turns[1].text == "d \" ]");
  CHECK(read("[]").empty());
  CHECK(read("  [ ]  \n").empty());
}

TEST_CASE("sharegpt multi-turn with system", "[reader]") {
  const auto cs = read(
      R"({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q1"},)"
      R"( {"from": "gpt", "value": "a1"}, {"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}]})");
  REQUIRE(cs.size() == 1);
  CHECK(cs[0].system == "S");
  REQUIRE(cs[0].turns.size() == 4);
  CHECK(cs[0].turns[2].role == Role::user);
  CHECK(cs[0].turns[2].text == "q2");
  CHECK(cs[0].turns[3].text == "a2");
}

TEST_CASE("openai messages multi-turn", "[reader]") {
  const auto cs = read(
      R"({"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},)"
      R"( {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]})",
      Format::messages);
  REQUIRE(cs.size() == 1);
  CHECK(cs[0].system.empty());
  REQUIRE(cs[0].turns.size() == 4);
  CHECK(cs[0].turns[1].role == Role::assistant);
  CHECK(cs[0].turns[1].text == "a1");
}

TEST_CASE("auto detects the format per record", "[reader]") {
  const auto cs = read(R"({"instruction": "i", "output": "o"})"
                       "\n"
                       R"({"conversations": [{"from": "human", "value": "h"}, {"from": "gpt", "value": "g"}]})"
                       "\n"
                       R"({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})");
  REQUIRE(cs.size() == 3);
  CHECK(cs[0].turns[1].text == "o");
  CHECK(cs[1].turns[1].text == "g");
  CHECK(cs[2].turns[1].text == "a");
  CHECK(parse_format("sharegpt") == Format::sharegpt);
  CHECK_THROWS_AS(parse_format("csv"), Error);
}

TEST_CASE("bad records fail with FILE:LINE and what is wrong", "[reader]") {
  using Catch::Matchers::Contains;
  const std::string ok = R"({"instruction": "i", "output": "o"})";
  CHECK_THAT(error_of(ok + "\n{\"instruction\": \"i\", \"output\": }\n"), Contains("bad.jsonl:2: not valid JSON"));
  CHECK_THAT(error_of(ok + "\n" + ok + "\n{\"instruction\": \"i\"}"),
             Contains("bad.jsonl:3: field 'output' is missing"));
  CHECK_THAT(error_of(R"({"instruction": "i", "output": 5})"),
             Contains("bad.jsonl:1: field 'output' must be a string, got number"));
  CHECK_THAT(error_of(R"({"instruction": "i", "output": ""})"), Contains("bad.jsonl:1: field 'output' is empty"));
  CHECK_THAT(error_of("{\"instruction\": \"i\", \"output\": \"\xC3\x28\"}"), Contains("bad.jsonl:1: invalid UTF-8"));
  CHECK_THAT(error_of("[1, 2]"), Contains("bad.jsonl:1: a record must be a JSON object"));
  CHECK_THAT(error_of(R"({"text": "x"})"), Contains("bad.jsonl:1: cannot tell the format"));
  CHECK_THAT(error_of(R"({"instruction": "i", "output": "o"})", Format::sharegpt),
             Contains("bad.jsonl:1: field 'conversations' is missing"));
  CHECK_THAT(error_of(R"({"conversations": [{"from": "gpt", "value": "g"}]})"),
             Contains("conversations[0]: expected a user turn, got assistant"));
  CHECK_THAT(error_of(R"({"conversations": [{"from": "human", "value": "h"}]})"),
             Contains("must end with an assistant turn"));
  CHECK_THAT(error_of(R"({"conversations": [{"from": "human", "value": "h"}, {"from": "bot", "value": "g"}]})"),
             Contains("bad.jsonl:1: conversations[1]: unknown from 'bot'"));
  CHECK_THAT(error_of(R"({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": ""}]})"),
             Contains("messages[1]: the assistant turn is empty"));
  CHECK_THAT(error_of(R"({"messages": [{"role": "user", "content": [1]}, {"role": "assistant", "content": "a"}]})"),
             Contains("messages[0]: field 'content' must be a string, got array"));
  // In a JSON array the line is where the bad element starts.
  CHECK_THAT(error_of("[\n" + ok + ",\n\n  {\"instruction\": \"i\",\n \"output\": 1}\n]"),
             Contains("bad.jsonl:4: field 'output' must be a string"));
  CHECK_THAT(error_of("[\n" + ok + ",\n"), Contains("the JSON array is not closed"));
}

TEST_CASE("on-bad skip skips and counts by reason", "[reader]") {
  ReadStats stats;
  const auto cs = read_conversations_text(
      "{\"instruction\": \"i\", \"output\": \"o\"}\nnot json\n{\"instruction\": \"i\", \"output\": \"\"}\n"
      "{\"instruction\": \"i\"}\n{\"instruction\": \"i2\", \"output\": \"o2\"}\n",
      "x.jsonl", Format::auto_detect, OnBad::skip, stats);
  REQUIRE(cs.size() == 2);
  CHECK(cs[1].where == "x.jsonl:5");
  CHECK(stats.records == 5);
  CHECK(stats.bad == 3);
  CHECK(stats.bad_by_reason["invalid_json"] == 1);
  CHECK(stats.bad_by_reason["empty_output"] == 1);
  CHECK(stats.bad_by_reason["missing_field"] == 1);
}

TEST_CASE("reading a file names it - a missing file is an error", "[reader]") {
  const auto dir = test::temp_dir("reader");
  std::ofstream(dir / "a.json") << "\xEF\xBB\xBF[{\"instruction\": \"i\", \"output\": \"o\"}]";
  ReadStats stats;
  const auto cs = read_conversations(dir / "a.json", Format::alpaca, OnBad::error, stats);
  REQUIRE(cs.size() == 1);
  CHECK(cs[0].where == (dir / "a.json").string() + ":1");
  CHECK_THROWS_WITH(read_conversations(dir / "missing.jsonl", Format::alpaca, OnBad::error, stats),
                    Catch::Matchers::Contains("cannot open"));
}

// A bounded mutation fuzzer for the readers: random byte edits of valid inputs must give either
// conversations or ift::Error, never a crash or another exception. Fixed seed, fixed count.
// Files are read in 1 MiB chunks (constant memory): records, strings, escapes and line ends that
// straddle a chunk boundary read exactly as the whole text does, JSONL and JSON array alike.
TEST_CASE("reading a file streams it: records across chunk boundaries read as in memory", "[reader]") {
  const auto dir = test::temp_dir("reader-stream");
  std::mt19937 rng(11);
  std::string jsonl, array = "\xEF\xBB\xBF  [\n";
  for (int i = 0; jsonl.size() < (size_t(5) << 19); ++i) {  // ~2.5 MiB: two boundaries at least
    std::string out(1 + rng() % 3000, 'o');
    out[rng() % out.size()] = '\n';  // an escaped newline inside a string
    const std::string rec = nlohmann::json{{"instruction", "q \"" + std::to_string(i) + "\\"}, {"output", out}}.dump();
    jsonl += rec + (i % 5 ? "\n" : "\r\n\n");
    array += (i ? ",\n " : " ") + rec;
  }
  array += "\n]\n";
  for (const auto& [name, text] : {std::pair{"a.jsonl", jsonl}, std::pair{"b.json", array}}) {
    INFO(name);
    std::ofstream(dir / name, std::ios::binary) << text;
    ReadStats s1, s2;
    const auto from_file = read_conversations(dir / name, Format::auto_detect, OnBad::error, s1);
    const auto from_text = read_conversations_text(text, (dir / name).string(), Format::auto_detect, OnBad::error, s2);
    REQUIRE(from_file.size() == from_text.size());
    REQUIRE(from_file.size() > 1000);
    CHECK(s1.records == s2.records);
    for (size_t i = 0; i < from_file.size(); ++i) {
      INFO("record " << i);
      REQUIRE(from_file[i].where == from_text[i].where);
      REQUIRE(from_file[i].turns.size() == 2);
      REQUIRE(from_file[i].turns[1].text == from_text[i].turns[1].text);
      REQUIRE(from_file[i].turns[0].text == from_text[i].turns[0].text);
    }
  }
}

TEST_CASE("reader fuzz: mutated inputs never crash", "[reader][fuzz]") {
  const std::vector<std::string> seeds = {
      R"([{"instruction": "Add.", "input": "2 and 3", "output": "5", "system": "s"}])",
      R"({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a\u00e9\n"}]})"
      "\n{\"instruction\": \"x\", \"output\": \"y\"}\n",
      R"({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})",
  };
  const std::string alphabet = "{}[]\",:\\ \n\tu0aé\xff\x80";
  std::mt19937_64 rng(20240607);
  int64_t ok = 0, errors = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  for (int iter = 0; iter < 200000 && std::chrono::steady_clock::now() < deadline; ++iter) {
    std::string s = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !s.empty(); ++e) {
      const size_t pos = rng() % s.size();
      switch (rng() % 4) {
        case 0: s[pos] = alphabet[rng() % alphabet.size()]; break;
        case 1: s.erase(pos, 1 + rng() % 8); break;
        case 2: s.insert(pos, 1, alphabet[rng() % alphabet.size()]); break;
        case 3: s = s.substr(0, pos); break;
      }
    }
    for (OnBad policy : {OnBad::error, OnBad::skip}) {
      ReadStats stats;
      try {
        const auto cs = read_conversations_text(s, "fuzz.jsonl", Format::auto_detect, policy, stats);
        for (const auto& c : cs) {  // whatever comes out satisfies the Conversation invariants
          REQUIRE(!c.turns.empty());
          REQUIRE(c.turns.back().role == Role::assistant);
        }
        ++ok;
      } catch (const Error& e) {
        REQUIRE(std::string(e.what()).starts_with("fuzz.jsonl:"));
        ++errors;
      }
    }
  }
  INFO("ok " << ok << ", errors " << errors);
  CHECK(ok > 0);
  CHECK(errors > 0);
}
