#include "data/reader.h"

#include <fstream>
#include <functional>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"

namespace ift {

namespace {

using nlohmann::json;

// A bad record: `reason` is the short key counted in the report, `what` the message after FILE:LINE.
struct BadRecord {
  std::string reason, what;
};

[[noreturn]] void bad(std::string reason, std::string what) { throw BadRecord{std::move(reason), std::move(what)}; }

// A string field: absent -> "" when optional, else missing_field; wrong type -> wrong_type.
std::string string_field(const json& obj, const char* key, bool required, const std::string& context = "") {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) bad("missing_field", context + "field '" + key + "' is missing");
    return {};
  }
  if (!it->is_string()) bad("wrong_type", context + "field '" + key + "' must be a string, got " + it->type_name());
  return it->get<std::string>();
}

void require_nonempty(const std::string& s, const char* reason, const std::string& what) {
  if (s.empty()) bad(reason, what);
}

// Role names of one turn list, already mapped to "system" / "user" / "assistant".
Conversation from_turns(const std::vector<std::pair<std::string, std::string>>& turns, const char* list_name) {
  Conversation c;
  size_t i = 0;
  if (!turns.empty() && turns[0].first == "system") {
    c.system = turns[0].second;
    i = 1;
  }
  if (i == turns.size()) bad("no_turns", std::string("'") + list_name + "' holds no user/assistant turns");
  for (; i < turns.size(); ++i) {
    const auto& [role, text] = turns[i];
    const std::string where = std::string(list_name) + "[" + std::to_string(i) + "]: ";
    const bool want_user = c.turns.size() % 2 == 0;
    if (role == "system") bad("bad_role_order", where + "a system turn is only allowed first");
    if (want_user && role != "user") bad("bad_role_order", where + "expected a user turn, got " + role);
    if (!want_user && role != "assistant") bad("bad_role_order", where + "expected an assistant turn, got " + role);
    if (role == "assistant") require_nonempty(text, "empty_output", where + "the assistant turn is empty");
    else require_nonempty(text, "empty_turn", where + "the user turn is empty");
    c.turns.push_back(Turn{role == "user" ? Role::user : Role::assistant, text, ""});
  }
  if (c.turns.back().role != Role::assistant)
    bad("bad_role_order", std::string("'") + list_name + "' must end with an assistant turn");
  return c;
}

Conversation read_alpaca(const json& r) {
  Conversation c;
  c.system = string_field(r, "system", false);
  Turn user{Role::user, string_field(r, "instruction", true), string_field(r, "input", false)};
  Turn answer{Role::assistant, string_field(r, "output", true), ""};
  require_nonempty(user.text, "empty_instruction", "field 'instruction' is empty");
  require_nonempty(answer.text, "empty_output", "field 'output' is empty");
  c.turns = {std::move(user), std::move(answer)};
  return c;
}

// ShareGPT and messages differ only in key names and role names.
Conversation read_turn_list(const json& r, const char* list, const char* role_key, const char* text_key,
                            const char* system_name, const char* user_name, const char* assistant_name) {
  auto it = r.find(list);
  if (it == r.end()) bad("missing_field", std::string("field '") + list + "' is missing");
  if (!it->is_array()) bad("wrong_type", std::string("field '") + list + "' must be a list, got " + it->type_name());
  std::vector<std::pair<std::string, std::string>> turns;
  for (size_t i = 0; i < it->size(); ++i) {
    const json& t = (*it)[i];
    const std::string ctx = std::string(list) + "[" + std::to_string(i) + "]: ";
    if (!t.is_object()) bad("wrong_type", ctx + "must be an object, got " + t.type_name());
    const std::string role = string_field(t, role_key, true, ctx);
    std::string mapped;
    if (role == system_name) mapped = "system";
    else if (role == user_name) mapped = "user";
    else if (role == assistant_name) mapped = "assistant";
    else
      bad("unknown_role", ctx + "unknown " + role_key + " '" + role + "' (expected " + system_name + ", " + user_name +
                              " or " + assistant_name + ")");
    turns.emplace_back(mapped, string_field(t, text_key, true, ctx));
  }
  return from_turns(turns, list);
}

Format detect(const json& r) {
  if (r.contains("conversations")) return Format::sharegpt;
  if (r.contains("messages")) return Format::messages;
  if (r.contains("instruction") || r.contains("output")) return Format::alpaca;
  bad("unknown_format", "cannot tell the format: the record has none of 'instruction'/'output' (alpaca), "
                        "'conversations' (sharegpt), 'messages' (messages)");
}

Conversation read_record(std::string_view text, Format format) {
  json r;
  try {
    r = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    std::string msg = e.what();
    // nlohmann prefixes "[json.exception.parse_error.101] "; the rest is the useful part.
    if (auto p = msg.find("] "); p != std::string::npos && msg.starts_with("[json.exception")) msg = msg.substr(p + 2);
    const bool utf8 = msg.find("UTF-8") != std::string::npos;
    bad(utf8 ? "invalid_utf8" : "invalid_json", (utf8 ? "invalid UTF-8: " : "not valid JSON: ") + msg);
  }
  if (!r.is_object()) bad("wrong_type", std::string("a record must be a JSON object, got ") + r.type_name());
  if (format == Format::auto_detect) format = detect(r);
  switch (format) {
    case Format::alpaca: return read_alpaca(r);
    case Format::sharegpt: return read_turn_list(r, "conversations", "from", "value", "system", "human", "gpt");
    case Format::messages: return read_turn_list(r, "messages", "role", "content", "system", "user", "assistant");
    case Format::auto_detect: break;
  }
  bad("unknown_format", "unknown format");
}

// The bytes of a file (read in 1 MiB chunks) or of text in memory, one character at a time, so a
// file of any size is scanned in constant memory.
class CharSource {
 public:
  explicit CharSource(std::string_view text) : view_(text) {}
  explicit CharSource(std::istream& in) : in_(&in), chunk_(size_t(1) << 20, '\0') {}

  // The next character, or -1 at the end.
  int peek() { return pos_ < view_.size() || refill() ? static_cast<unsigned char>(view_[pos_]) : -1; }
  int get() {
    const int c = peek();
    if (c >= 0) ++pos_;
    return c;
  }
  // Whether the next bytes are `s` (|s| <= 3: the byte-order mark); consumes them if so.
  bool skip_prefix(std::string_view s) {
    peek();  // the first chunk holds any prefix but of a file shorter than it
    if (!view_.substr(pos_).starts_with(s)) return false;
    pos_ += s.size();
    return true;
  }
  int64_t consumed() const { return done_ + static_cast<int64_t>(pos_); }

 private:
  bool refill() {
    if (!in_) return false;
    done_ += static_cast<int64_t>(view_.size());
    in_->read(chunk_.data(), static_cast<std::streamsize>(chunk_.size()));
    view_ = std::string_view(chunk_.data(), static_cast<size_t>(in_->gcount()));
    pos_ = 0;
    return !view_.empty();
  }

  std::istream* in_ = nullptr;
  std::string chunk_;
  std::string_view view_;
  size_t pos_ = 0;
  int64_t done_ = 0;
};

bool is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

void trim_right(std::string& s) {
  while (!s.empty() && is_space(s.back())) s.pop_back();
}

// The elements of a top-level JSON array, split without parsing them, so each can be parsed (and
// reported, or skipped) on its own with its own line number. `src` is just past the '['.
void split_array(CharSource& src, int64_t line, const std::string& name,
                 const std::function<void(std::string_view, int64_t)>& emit) {
  auto skip_ws = [&] {
    while (is_space(src.peek()))
      if (src.get() == '\n') ++line;
  };
  std::string record;
  bool first = true;
  for (;;) {
    skip_ws();
    IFT_CHECK(src.peek() >= 0, name, ":", line, ": the JSON array is not closed (missing ']')");
    if (src.peek() == ']' && first) {
      src.get();
      break;
    }
    first = false;
    const int64_t start_line = line;
    int depth = 0;
    bool in_string = false, escaped = false;
    int ch = -1;
    record.clear();
    while ((ch = src.peek()) >= 0) {
      if (ch == '\n') ++line;
      if (in_string) {
        if (escaped) escaped = false;         // an escaped character never ends the string
        else if (ch == '\\') escaped = true;
        else if (ch == '"') in_string = false;
      } else if (ch == '"') {
        in_string = true;
      } else if (ch == '{' || ch == '[') {
        ++depth;
      } else if (ch == '}' || ch == ']') {
        if (depth == 0) break;
        --depth;
      } else if (ch == ',' && depth == 0) {
        break;
      }
      record.push_back(static_cast<char>(src.get()));
    }
    IFT_CHECK(ch >= 0, name, ":", start_line, ": the JSON array is not closed (missing ']')");
    trim_right(record);
    emit(record, start_line);
    src.get();
    if (ch == ']') break;
  }
  skip_ws();
  IFT_CHECK(src.peek() < 0, name, ":", line, ": unexpected text after the end of the JSON array");
}

// JSONL: every line that is not blank is a record.
void split_lines(CharSource& src, int64_t line, std::string pending,
                 const std::function<void(std::string_view, int64_t)>& emit) {
  std::string text = std::move(pending);
  for (;;) {
    const int ch = src.get();
    if (ch >= 0 && ch != '\n') {
      text.push_back(static_cast<char>(ch));
      continue;
    }
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.find_first_not_of(" \t") != std::string::npos) emit(text, line);
    if (ch < 0) return;
    text.clear();
    ++line;
  }
}

// Splits the records of `src` (a JSON array, or JSONL) and reads each into a Conversation.
void read_records(CharSource& src, const std::string& name, Format format, OnBad on_bad, ReadStats& stats,
                  const std::function<void(Conversation&&)>& fn) {
  auto emit = [&](std::string_view text, int64_t line) {
    ++stats.records;
    const std::string where = name + ":" + std::to_string(line);
    Conversation c;
    try {
      c = read_record(text, format);
    } catch (const BadRecord& b) {
      if (on_bad == OnBad::error) fail(where, ": ", b.what, " (--on-bad skip skips such records)");
      ++stats.bad;
      ++stats.bad_by_reason[b.reason];
      return;
    }
    c.where = where;
    fn(std::move(c));
  };
  // Skip a UTF-8 byte-order mark; then '[' means one JSON array, anything else JSONL.
  src.skip_prefix("\xEF\xBB\xBF");
  int64_t line = 1;
  std::string on_line;  // the blanks before the first record, kept on its line (JSON column numbers)
  while (is_space(src.peek())) {
    const int ch = src.get();
    on_line.push_back(static_cast<char>(ch));
    if (ch == '\n') ++line, on_line.clear();
  }
  if (src.peek() == '[') {
    src.get();
    split_array(src, line, name, emit);
  } else {
    split_lines(src, line, std::move(on_line), emit);
  }
}

}  // namespace

Format parse_format(std::string_view name) {
  if (name == "auto") return Format::auto_detect;
  if (name == "alpaca") return Format::alpaca;
  if (name == "sharegpt") return Format::sharegpt;
  if (name == "messages") return Format::messages;
  fail("unknown data format '", name, "' (expected auto, alpaca, sharegpt or messages)");
}

const char* format_name(Format f) {
  switch (f) {
    case Format::auto_detect: return "auto";
    case Format::alpaca: return "alpaca";
    case Format::sharegpt: return "sharegpt";
    case Format::messages: return "messages";
  }
  return "?";
}

void for_each_conversation(const std::filesystem::path& path, Format format, OnBad on_bad, ReadStats& stats,
                           const std::function<void(Conversation&&)>& fn, const std::function<void(int64_t)>& bytes_read) {
  std::ifstream in(path, std::ios::binary);
  IFT_CHECK(in, path.string(), ": cannot open");
  CharSource src(in);
  int64_t records = 0;
  read_records(src, path.string(), format, on_bad, stats, [&](Conversation&& c) {
    fn(std::move(c));
    if (bytes_read && ++records % 4096 == 0) bytes_read(src.consumed());
  });
  IFT_CHECK(!in.bad(), path.string(), ": read failed");
  if (bytes_read) bytes_read(src.consumed());
}

std::vector<Conversation> read_conversations_text(std::string_view text, const std::string& name, Format format,
                                                  OnBad on_bad, ReadStats& stats) {
  CharSource src(text);
  std::vector<Conversation> out;
  read_records(src, name, format, on_bad, stats, [&](Conversation&& c) { out.push_back(std::move(c)); });
  return out;
}

std::vector<Conversation> read_conversations(const std::filesystem::path& path, Format format, OnBad on_bad,
                                             ReadStats& stats) {
  std::vector<Conversation> out;
  for_each_conversation(path, format, on_bad, stats, [&](Conversation&& c) { out.push_back(std::move(c)); });
  return out;
}

}  // namespace ift
