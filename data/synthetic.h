// Synthetic instruction tasks for the demo and for tests: several task families (reverse a word
// list, upper-case it, sort numbers, add, count words, extract the number from a sentence; and,
// outside the demo's set, the largest of some numbers, which the LoRA demo teaches), each asked in
// many phrasings. Phrasings are built as (verb phrase x object phrase); a fixed quarter of
// the combinations is held out of training and used only for evaluation, so the evaluation measures
// following an instruction worded in a way never seen, not a memorised string. Every verb phrase and
// every object phrase also occurs in training, in other combinations.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "data/template.h"

namespace ift {

// One Alpaca-style record with its family: {"instruction", "input", "output", "task"}.
struct TaskExample {
  std::string task, instruction, input, output;
};

struct SynthOptions {
  int64_t train = 20000;  // training examples (training phrasings only)
  int64_t eval = 300;     // evaluation examples (held-out phrasings only)
  uint64_t seed = 0;
  // The families, in this order; empty: the demo's (synthetic_task_names). An unknown name is an
  // error listing synthetic_all_task_names().
  std::vector<std::string> tasks;
  // Relative share of each family in the training examples, by task name; a family not named has
  // weight 1, so the default is an even spread. The evaluation examples are always spread evenly.
  std::vector<std::pair<std::string, int>> mix;
};

struct SynthSet {
  std::vector<TaskExample> train, eval;
};

// The demo's task families, in generation order (what make_synthetic writes by default).
std::vector<std::string> synthetic_task_names();
// Those and the families outside the demo's set ("max").
std::vector<std::string> synthetic_all_task_names();
// All phrasings of one family's instruction, and whether each is held out.
struct Phrasing {
  std::string text;
  bool held_out = false;
};
std::vector<Phrasing> synthetic_phrasings(const std::string& task);

// Training examples spread over the families by `mix` (evenly by default), evaluation examples
// evenly; deterministic in the seed. With all weights 1 the families simply take turns.
SynthSet make_synthetic(const SynthOptions& options);

// Writes records as JSON lines ({"instruction","input","output","task"}), atomically.
void write_task_jsonl(const std::filesystem::path& path, const std::vector<TaskExample>& examples);
// Text for training a tokenizer on these examples: each one as the model will read it, rendered in
// `tmpl` as plain text (its {bos}/{eos}/special-token markers left out), one example per paragraph.
std::string tokenizer_corpus(const std::vector<TaskExample>& examples, const Template& tmpl);

// Reads such a file; a malformed line or a missing field is an error naming FILE:LINE.
std::vector<TaskExample> read_task_jsonl(const std::filesystem::path& path);

}  // namespace ift
