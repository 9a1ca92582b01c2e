// Instruction-data readers: Alpaca, ShareGPT and OpenAI-messages records, as a JSON array or as
// JSONL (one record per line), all read into Conversation.
//
//   alpaca    {"instruction": str, "input": str (optional, may be ""), "output": str, "system": str (optional)}
//   sharegpt  {"conversations": [{"from": "system"|"human"|"gpt", "value": str}, ...]}
//   messages  {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
//
// Every record is checked: a malformed JSON line, a missing or wrongly typed field, an empty
// output, invalid UTF-8, roles out of order. With OnBad::error the first bad record throws
// ift::Error "FILE:LINE: what is wrong"; with OnBad::skip it is skipped and counted by reason.
// LINE is the line where the record starts, in a JSON array too.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "data/conversation.h"

namespace ift {

enum class Format { auto_detect, alpaca, sharegpt, messages };
enum class OnBad { error, skip };

Format parse_format(std::string_view name);  // "auto", "alpaca", "sharegpt", "messages"
const char* format_name(Format f);

struct ReadStats {
  int64_t records = 0;                       // records seen, good and bad
  int64_t bad = 0;                           // records skipped (OnBad::skip)
  std::map<std::string, int64_t> bad_by_reason;  // short reason ("invalid_json", "missing_field", ...) -> count
};

// Reads one file record by record, in constant memory whatever its size (JSONL or a JSON array),
// calling `fn` on each good record in file order; `bytes_read`, if given, is told how far the
// reading is now and then (every 4096 records, and at the end).
void for_each_conversation(const std::filesystem::path& path, Format format, OnBad on_bad, ReadStats& stats,
                           const std::function<void(Conversation&&)>& fn,
                           const std::function<void(int64_t)>& bytes_read = {});

// Reads one file into memory. `format` auto_detect picks the format of each record from its keys.
std::vector<Conversation> read_conversations(const std::filesystem::path& path, Format format, OnBad on_bad,
                                             ReadStats& stats);

// The same on text already in memory; `name` stands for the file name in messages.
std::vector<Conversation> read_conversations_text(std::string_view text, const std::string& name, Format format,
                                                  OnBad on_bad, ReadStats& stats);

}  // namespace ift
