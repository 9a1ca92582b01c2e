#include "data/synthetic.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "engine/base/error.h"
#include "tests/support.h"

using namespace ift;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// Recomputes the answer of one example from its input, independently of the generator.
std::string solve(const TaskExample& e) {
  std::vector<std::string> w = split(e.input);
  if (e.task == "reverse") std::reverse(w.begin(), w.end());
  if (e.task == "uppercase")
    for (std::string& x : w) std::transform(x.begin(), x.end(), x.begin(), ::toupper);
  if (e.task == "sort") std::sort(w.begin(), w.end(), [](auto& a, auto& b) { return std::stoi(a) < std::stoi(b); });
  if (e.task == "max") return *std::max_element(w.begin(), w.end());  // single digits: as strings too
  if (e.task == "add") return std::to_string(std::stoi(w.at(0)) + std::stoi(w.at(2)));
  if (e.task == "count") return std::to_string(w.size());
  if (e.task == "extract") {
    for (const std::string& x : w)
      if (std::isdigit(static_cast<unsigned char>(x[0]))) return x;
    return "?";
  }
  std::string s;
  for (const std::string& x : w) s += (s.empty() ? "" : " ") + x;
  return s;
}

}  // namespace

TEST_CASE("synthetic: a quarter of each task's phrasings is held out, every phrase still seen in training",
          "[synthetic]") {
  const std::vector<std::string> names = synthetic_task_names();
  CHECK(names == std::vector<std::string>{"reverse", "uppercase", "sort", "add", "count", "extract"});
  for (const std::string& task : names) {
    const std::vector<Phrasing> ph = synthetic_phrasings(task);
    REQUIRE(ph.size() == 16);
    CHECK(std::count_if(ph.begin(), ph.end(), [](const Phrasing& p) { return p.held_out; }) == 4);
    // Every word of a held-out phrasing occurs in some training phrasing of the same task.
    std::set<std::string> train_words;
    for (const Phrasing& p : ph)
      if (!p.held_out)
        for (const std::string& w : split(p.text)) train_words.insert(w);
    for (const Phrasing& p : ph)
      if (p.held_out)
        for (const std::string& w : split(p.text)) CHECK(train_words.count(w) == 1);
  }
  CHECK_THROWS_AS(synthetic_phrasings("juggle"), Error);
}

TEST_CASE("synthetic: answers are right, eval uses only held-out phrasings, same seed same data", "[synthetic]") {
  SynthOptions o;
  o.train = 601;
  o.eval = 97;
  o.seed = 3;
  const SynthSet s = make_synthetic(o);
  REQUIRE(s.train.size() == 601);
  REQUIRE(s.eval.size() == 97);
  std::map<std::string, std::set<std::string>> held;
  for (const std::string& t : synthetic_task_names())
    for (const Phrasing& p : synthetic_phrasings(t))
      if (p.held_out) held[t].insert(p.text);
  std::map<std::string, int> per_task;
  for (const TaskExample& e : s.train) {
    CHECK(solve(e) == e.output);
    CHECK(held[e.task].count(e.instruction) == 0);
    ++per_task[e.task];
  }
  for (const TaskExample& e : s.eval) {
    CHECK(solve(e) == e.output);
    CHECK(held[e.task].count(e.instruction) == 1);
  }
  for (const auto& [task, n] : per_task) CHECK((n == 100 || n == 101));  // spread evenly

  const SynthSet again = make_synthetic(o);
  CHECK(again.train.back().input == s.train.back().input);
  CHECK(again.eval.front().output == s.eval.front().output);
  o.seed = 4;
  CHECK(make_synthetic(o).train.front().input != s.train.front().input);
}

// The LoRA demo's task: outside the demo's set (its data and tokenizer corpus never hold it), made
// only when named; the default is the six tasks exactly, so the demo's data did not change.
TEST_CASE("synthetic: the max task only when asked for, tasks chosen by name, an unknown one is an error",
          "[synthetic]") {
  const std::vector<std::string> six = synthetic_task_names();
  std::vector<std::string> all = six;
  all.push_back("max");
  CHECK(synthetic_all_task_names() == all);
  const std::vector<Phrasing> ph = synthetic_phrasings("max");
  REQUIRE(ph.size() == 16);
  CHECK(std::count_if(ph.begin(), ph.end(), [](const Phrasing& p) { return p.held_out; }) == 4);
  SynthOptions o;
  o.train = 303, o.eval = 31, o.seed = 5;
  const SynthSet plain = make_synthetic(o);
  for (const TaskExample& e : plain.train) CHECK(e.task != "max");
  o.tasks = six;
  const SynthSet named = make_synthetic(o);
  for (size_t i = 0; i < plain.train.size(); ++i) CHECK(named.train[i].input == plain.train[i].input);
  o.tasks = {"max", "sort"};
  const SynthSet two = make_synthetic(o);
  REQUIRE(two.train.size() == 303);
  int max_examples = 0;
  for (const TaskExample& e : two.train) {
    CHECK((e.task == "max" || e.task == "sort"));
    CHECK(solve(e) == e.output);
    max_examples += e.task == "max";
    if (e.task == "max") {
      const size_t n = split(e.input).size();
      CHECK((n >= 3 && n <= 5));
    }
  }
  CHECK(max_examples == 152);
  CHECK(two.train[0].task == "max");
  for (const TaskExample& e : two.eval) {
    CHECK(solve(e) == e.output);
    const auto it = std::find_if(ph.begin(), ph.end(), [&](const Phrasing& p) { return p.text == e.instruction; });
    if (e.task == "max") CHECK((it != ph.end() && it->held_out));
  }
  o.tasks = {"juggle"};
  CHECK_THROWS_WITH(make_synthetic(o), Catch::Contains("unknown task 'juggle'") &&
                                           Catch::Contains("count, extract, max"));
}

TEST_CASE("synthetic: the training mix weights the tasks, eval stays even, equal weights change nothing",
          "[synthetic]") {
  SynthOptions o;
  o.train = 803;  // 100 cycles of 8 and 3 more
  o.eval = 61;
  o.seed = 5;
  const SynthSet even = make_synthetic(o);
  o.mix = {{"uppercase", 2}, {"reverse", 2}};
  const SynthSet s = make_synthetic(o);
  REQUIRE(s.train.size() == 803);
  std::map<std::string, int> per_task, per_eval;
  for (const TaskExample& e : s.train) {
    CHECK(solve(e) == e.output);
    ++per_task[e.task];
  }
  CHECK(per_task["reverse"] == 201);  // the cycle is reverse uppercase sort add count extract reverse uppercase
  CHECK(per_task["uppercase"] == 201);
  CHECK(per_task["sort"] == 101);
  for (const char* t : {"add", "count", "extract"}) CHECK(per_task[t] == 100);
  CHECK(s.train[6].task == "reverse");
  CHECK(s.train[7].task == "uppercase");
  for (const TaskExample& e : s.eval) ++per_eval[e.task];
  for (const auto& [task, n] : per_eval) CHECK((n == 10 || n == 11));

  // All weights 1 is the default: the same examples, bit for bit.
  o.mix.clear();
  for (const std::string& t : synthetic_task_names()) o.mix.emplace_back(t, 1);
  const SynthSet same = make_synthetic(o);
  REQUIRE(same.train.size() == even.train.size());
  for (size_t i = 0; i < same.train.size(); ++i) {
    CHECK(same.train[i].input == even.train[i].input);
    CHECK(same.train[i].instruction == even.train[i].instruction);
  }
  CHECK(same.eval.back().input == even.eval.back().input);

  // A weight of 0 leaves a task out of training, not out of evaluation.
  o.mix = {{"add", 0}};
  const SynthSet no_add = make_synthetic(o);
  CHECK(std::none_of(no_add.train.begin(), no_add.train.end(), [](const TaskExample& e) { return e.task == "add"; }));
  CHECK(std::any_of(no_add.eval.begin(), no_add.eval.end(), [](const TaskExample& e) { return e.task == "add"; }));

  o.mix = {{"juggle", 2}};
  CHECK_THROWS_WITH(make_synthetic(o), Catch::Contains("'juggle'"));
  o.mix = {{"sort", -1}};
  CHECK_THROWS_WITH(make_synthetic(o), Catch::Contains("'sort'") && Catch::Contains("-1"));
  o.mix.clear();
  for (const std::string& t : synthetic_task_names()) o.mix.emplace_back(t, 0);
  CHECK_THROWS_WITH(make_synthetic(o), Catch::Contains("weight 0"));
}

TEST_CASE("synthetic: JSONL round trip, bad lines named by FILE:LINE", "[synthetic]") {
  const auto dir = test::temp_dir("synthetic");
  SynthOptions o;
  o.train = 12;
  o.eval = 0;
  const SynthSet s = make_synthetic(o);
  write_task_jsonl(dir / "t.jsonl", s.train);
  const std::vector<TaskExample> back = read_task_jsonl(dir / "t.jsonl");
  REQUIRE(back.size() == 12);
  for (size_t i = 0; i < back.size(); ++i) {
    CHECK(back[i].task == s.train[i].task);
    CHECK(back[i].instruction == s.train[i].instruction);
    CHECK(back[i].input == s.train[i].input);
    CHECK(back[i].output == s.train[i].output);
  }
  {
    std::ofstream(dir / "bad.jsonl") << R"({"instruction":"a","output":"b"})" << "\n\n" << R"({"instruction":"a"})" << "\n";
  }
  try {
    read_task_jsonl(dir / "bad.jsonl");
    FAIL("no error");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains("bad.jsonl:3") && Catch::Contains("'output'"));
  }
  {
    std::ofstream(dir / "bad2.jsonl") << "{not json\n";
  }
  CHECK_THROWS_WITH(read_task_jsonl(dir / "bad2.jsonl"), Catch::Contains("bad2.jsonl:1"));
}

TEST_CASE("synthetic: the tokenizer corpus is the examples as the template renders them", "[synthetic]") {
  SynthOptions o;
  o.train = 2;
  o.eval = 0;
  const SynthSet s = make_synthetic(o);
  const std::string text = tokenizer_corpus(s.train, builtin_template("alpaca"));
  const TaskExample& e = s.train[0];
  CHECK_THAT(text, Catch::StartsWith("Below is an instruction that describes a task, paired with an input"));
  CHECK_THAT(text, Catch::Contains("### Instruction:\n" + e.instruction + "\n\n### Input:\n" + e.input +
                                   "\n\n### Response:" + e.output + "\n\n"));
  CHECK(text.find("{eos}") == std::string::npos);
}
