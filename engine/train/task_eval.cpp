#include "engine/train/task_eval.h"

#include <algorithm>

#include "engine/generate.h"

namespace ift {

namespace {

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n";
  const size_t a = s.find_first_not_of(ws);
  if (a == std::string_view::npos) return {};
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}

}  // namespace

bool exact_match(std::string_view answer, std::string_view reference) { return trim(answer) == trim(reference); }

TaskEvalReport score_tasks(const std::vector<TaskExample>& examples,
                           const std::function<std::string(const TaskExample&)>& answer,
                           const std::function<void(size_t)>& on_done) {
  TaskEvalReport r;
  for (size_t i = 0; i < examples.size(); ++i) {
    const TaskExample& e = examples[i];
    r.answers.push_back(answer(e));
    const bool ok = exact_match(r.answers.back(), e.output);
    r.correct.push_back(ok);
    auto it = std::find_if(r.tasks.begin(), r.tasks.end(), [&](const TaskScore& s) { return s.task == e.task; });
    if (it == r.tasks.end()) it = r.tasks.insert(r.tasks.end(), TaskScore{e.task});
    it->total += 1, it->correct += ok;
    r.overall.total += 1, r.overall.correct += ok;
    if (on_done) on_done(i);
  }
  return r;
}

nlohmann::json TaskEvalReport::to_json(const std::vector<TaskExample>& examples, int max_examples_per_task) const {
  nlohmann::json j{{"overall", {{"correct", overall.correct}, {"total", overall.total}, {"accuracy", overall.accuracy()}}},
                   {"tasks", nlohmann::json::object()}};
  for (const TaskScore& s : tasks) {
    nlohmann::json shown = nlohmann::json::array();
    for (size_t i = 0; i < examples.size() && int(shown.size()) < max_examples_per_task; ++i)
      if (examples[i].task == s.task)
        shown.push_back({{"instruction", examples[i].instruction},
                         {"input", examples[i].input},
                         {"expected", examples[i].output},
                         {"answer", answers[i]},
                         {"correct", bool(correct[i])}});
    j["tasks"][s.task] = {{"correct", s.correct}, {"total", s.total}, {"accuracy", s.accuracy()}, {"examples", shown}};
  }
  return j;
}

GreedyPrompt greedy_prompt(const Tokenizer& tok, const ChatFormatter& formatter, const TaskExample& example,
                           int max_new_tokens) {
  Conversation conv;
  conv.turns.push_back({Role::user, example.instruction, example.input});
  GreedyPrompt p;
  p.tokens = formatter.render_prompt(conv).tokens;
  p.sampling.max_new_tokens = max_new_tokens;
  if (tok.eos_id() >= 0) p.sampling.stop_ids = {tok.eos_id()};
  return p;
}

std::string answer_text(const Tokenizer& tok, std::vector<int32_t> ids) {
  if (!ids.empty() && tok.eos_id() >= 0 && ids.back() == tok.eos_id()) ids.pop_back();
  return tok.decode(ids);
}

}  // namespace ift
