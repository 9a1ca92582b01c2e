#include "data/reader.h"

#include <fstream>
#include <sstream>

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

// One record's text and the line it starts on.
struct RawRecord {
  std::string_view text;
  int64_t line;
};

// The elements of a top-level JSON array, split without parsing them, so each can be parsed (and
// reported, or skipped) on its own with its own line number. `pos` is just past the '['.
std::vector<RawRecord> split_array(std::string_view s, size_t pos, int64_t line, const std::string& name) {
  std::vector<RawRecord> out;
  auto skip_ws = [&] {
    while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\n' || s[pos] == '\r')) {
      if (s[pos] == '\n') ++line;
      ++pos;
    }
  };
  for (;;) {
    skip_ws();
    IFT_CHECK(pos < s.size(), name, ":", line, ": the JSON array is not closed (missing ']')");
    if (s[pos] == ']' && out.empty()) break;
    const size_t start = pos;
    const int64_t start_line = line;
    int depth = 0;
    bool in_string = false;
    for (; pos < s.size(); ++pos) {
      const char ch = s[pos];
      if (ch == '\n') ++line;
      if (in_string) {
        if (ch == '\\') ++pos;  // an escaped character never ends the string
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
    }
    IFT_CHECK(pos < s.size(), name, ":", start_line, ": the JSON array is not closed (missing ']')");
    size_t end = pos;
    while (end > start && (s[end - 1] == ' ' || s[end - 1] == '\t' || s[end - 1] == '\n' || s[end - 1] == '\r')) --end;
    out.push_back({s.substr(start, end - start), start_line});
    if (s[pos] == ']') break;
    IFT_CHECK(s[pos] == ',', name, ":", line, ": unexpected '", s[pos], "' in the JSON array");
    ++pos;
  }
  ++pos;
  skip_ws();
  IFT_CHECK(pos == s.size(), name, ":", line, ": unexpected text after the end of the JSON array");
  return out;
}

std::vector<RawRecord> split_lines(std::string_view s) {
  std::vector<RawRecord> out;
  int64_t line = 1;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t end = s.find('\n', pos);
    if (end == std::string_view::npos) end = s.size();
    std::string_view text = s.substr(pos, end - pos);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (text.find_first_not_of(" \t") != std::string_view::npos) out.push_back({text, line});
    pos = end + 1;
    ++line;
  }
  return out;
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

std::vector<Conversation> read_conversations_text(std::string_view text, const std::string& name, Format format,
                                                  OnBad on_bad, ReadStats& stats) {
  // Skip a UTF-8 byte-order mark; then '[' means one JSON array, anything else JSONL.
  const size_t bom = text.starts_with("\xEF\xBB\xBF") ? 3 : 0;
  size_t pos = bom;
  int64_t line = 1;
  while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' || text[pos] == '\r')) {
    if (text[pos] == '\n') ++line;
    ++pos;
  }
  const std::vector<RawRecord> raw = pos < text.size() && text[pos] == '['
                                         ? split_array(text, pos + 1, line, name)
                                         : split_lines(text.substr(bom));
  std::vector<Conversation> out;
  out.reserve(raw.size());
  for (const RawRecord& r : raw) {
    ++stats.records;
    const std::string where = name + ":" + std::to_string(r.line);
    try {
      Conversation c = read_record(r.text, format);
      c.where = where;
      out.push_back(std::move(c));
    } catch (const BadRecord& b) {
      if (on_bad == OnBad::error) fail(where, ": ", b.what, " (--on-bad skip skips such records)");
      ++stats.bad;
      ++stats.bad_by_reason[b.reason];
    }
  }
  return out;
}

std::vector<Conversation> read_conversations(const std::filesystem::path& path, Format format, OnBad on_bad,
                                             ReadStats& stats) {
  std::ifstream in(path, std::ios::binary);
  IFT_CHECK(in, path.string(), ": cannot open");
  std::ostringstream buf;
  buf << in.rdbuf();
  IFT_CHECK(!in.bad(), path.string(), ": read failed");
  return read_conversations_text(buf.str(), path.string(), format, on_bad, stats);
}

}  // namespace ift
