// Instruction-following evaluation by exact match (`ift eval --tasks`): each example's instruction
// (and input) is rendered with the chat template, the model answers greedily, and the answer counts
// when it equals the reference output after trimming surrounding whitespace. Scores per task and
// overall.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/synthetic.h"
#include "data/template.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "tokenizer/tokenizer.h"

namespace ift {

// answer == reference, ignoring leading and trailing whitespace on both.
bool exact_match(std::string_view answer, std::string_view reference);

struct TaskScore {
  std::string task;
  int64_t correct = 0, total = 0;
  double accuracy() const { return total ? double(correct) / double(total) : 0.0; }
};

struct TaskEvalReport {
  std::vector<TaskScore> tasks;  // in order of first appearance
  TaskScore overall{"overall"};
  std::vector<std::string> answers;  // one per example, in order
  std::vector<bool> correct;
  nlohmann::json to_json(const std::vector<TaskExample>& examples, int max_examples_per_task) const;
};

// Scores `answer(example)` against each example's output. `on_done(i)` (may be null) after each.
TaskEvalReport score_tasks(const std::vector<TaskExample>& examples,
                           const std::function<std::string(const TaskExample&)>& answer,
                           const std::function<void(size_t)>& on_done = nullptr);

// The prompt of one example (a user turn of instruction + input, rendered with the formatter's
// template) and greedy sampling up to EOS or max_new_tokens; and the answer text of what was
// generated (the EOS dropped).
struct GreedyPrompt {
  std::vector<int32_t> tokens;
  SamplingOptions sampling;
};
GreedyPrompt greedy_prompt(const Tokenizer& tok, const ChatFormatter& formatter, const TaskExample& example,
                           int max_new_tokens);
std::string answer_text(const Tokenizer& tok, std::vector<int32_t> generated);

// The model's greedy answer to one example, decoded on the model's own backend (any Model<B> or
// Transformer<B>).
template <class M>
std::string greedy_answer(const M& model, const Tokenizer& tok, const ChatFormatter& formatter,
                          const TaskExample& example, int max_new_tokens) {
  const GreedyPrompt p = greedy_prompt(tok, formatter, example, max_new_tokens);
  return answer_text(tok, generate(model, p.tokens, p.sampling));
}

}  // namespace ift
