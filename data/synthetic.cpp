#include "data/synthetic.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "engine/base/io.h"

namespace ift {

namespace {

const std::vector<std::string> kWords = {
    "cat",  "dog",  "sun",  "tree", "book", "car",  "fish", "bird", "lamp", "cup",  "door", "hat",
    "key",  "milk", "rose", "ship", "star", "wolf", "bell", "coin", "desk", "frog", "gold", "hill",
    "kite", "leaf", "moon", "nest", "owl",  "pen",  "rain", "salt", "tent", "vase", "wind", "ant",
    "bee",  "cow",  "egg",  "fox",  "jar",  "lion", "map",  "nut",  "oak",  "pig",  "rock", "sand",
    "toy",  "van",  "box",  "bus",  "fan",  "king", "ring", "road", "snow", "song", "wall", "boat"};

const std::vector<std::string> kFillers = {"the", "a", "big", "old", "red", "small", "green", "happy"};

// A family: how to phrase the instruction, and how to make one (input, output) pair.
struct Family {
  std::string name;
  std::vector<std::string> verbs, objects;  // instruction = verb + " " + object + "."
  std::string (*make)(std::mt19937_64& rng, std::string& input);
  bool extra = false;  // not among the demo's tasks (synthetic_task_names): only when asked for by name
};

int uniform(std::mt19937_64& rng, int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

std::vector<std::string> pick_words(std::mt19937_64& rng, int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(kWords[uniform(rng, 0, int(kWords.size()) - 1)]);
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const std::string& w : v) s += (s.empty() ? "" : " ") + w;
  return s;
}

std::string make_reverse(std::mt19937_64& rng, std::string& input) {
  std::vector<std::string> w = pick_words(rng, uniform(rng, 2, 3));
  input = join(w);
  std::reverse(w.begin(), w.end());
  return join(w);
}

std::string make_upper(std::mt19937_64& rng, std::string& input) {
  input = join(pick_words(rng, uniform(rng, 1, 3)));
  std::string out = input;
  for (char& ch : out) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return out;
}

std::vector<std::string> to_strings(const std::vector<int>& v) {
  std::vector<std::string> s;
  for (int x : v) s.push_back(std::to_string(x));
  return s;
}

std::string make_sort(std::mt19937_64& rng, std::string& input) {
  std::vector<int> v(uniform(rng, 3, 4));
  for (int& x : v) x = uniform(rng, 0, 9);
  input = join(to_strings(v));
  std::sort(v.begin(), v.end());
  return join(to_strings(v));
}

std::string make_max(std::mt19937_64& rng, std::string& input) {
  std::vector<int> v(uniform(rng, 3, 5));
  for (int& x : v) x = uniform(rng, 0, 9);
  input = join(to_strings(v));
  return std::to_string(*std::max_element(v.begin(), v.end()));
}

std::string make_add(std::mt19937_64& rng, std::string& input) {
  const int a = uniform(rng, 0, 9), b = uniform(rng, 0, 9);
  input = std::to_string(a) + " and " + std::to_string(b);
  return std::to_string(a + b);
}

std::string make_count(std::mt19937_64& rng, std::string& input) {
  const int n = uniform(rng, 1, 6);
  input = join(pick_words(rng, n));
  return std::to_string(n);
}

std::string make_extract(std::mt19937_64& rng, std::string& input) {
  const std::string number = std::to_string(uniform(rng, 0, 99));
  std::vector<std::string> w = pick_words(rng, uniform(rng, 2, 4));
  w.insert(w.begin() + uniform(rng, 0, int(w.size())), number);
  w.insert(w.begin(), kFillers[uniform(rng, 0, int(kFillers.size()) - 1)]);
  input = join(w);
  return number;
}

const std::vector<Family>& families() {
  static const std::vector<Family> f = {
      {"reverse",
       {"Reverse", "Flip", "Invert", "Turn around"},
       {"the order of these words", "this list of words", "the word order", "the sequence of words"},
       make_reverse},
      {"uppercase",
       {"Convert", "Rewrite", "Change", "Turn"},
       {"the text to upper case", "these words into capital letters", "every letter to uppercase",
        "the words to all caps"},
       make_upper},
      {"sort",
       {"Sort", "Order", "Arrange", "Put"},
       {"these numbers from smallest to largest", "the numbers in ascending order",
        "this list in increasing order", "the values from low to high"},
       make_sort},
      {"add",
       {"Add", "Sum", "Compute the total of", "Calculate the sum of"},
       {"these two numbers", "the numbers below", "the pair of numbers", "the given numbers"},
       make_add},
      {"count",
       {"Count", "Tell me", "Give", "Report"},
       {"how many words there are", "the number of words", "the word count of the text",
        "how many words the input has"},
       make_count},
      {"extract",
       {"Extract", "Find", "Pick out", "Return"},
       {"the number in this sentence", "the numeric value from the text", "the number that appears",
        "the only number in the input"},
       make_extract},
      // The LoRA demo's new task (configs/demo-lora.yaml): the demo's base model never saw it.
      {"max",
       {"Find", "Name", "Tell me", "Select"},
       {"the largest number", "the biggest of these numbers", "the maximum of the list", "the highest value"},
       make_max,
       true},
  };
  return f;
}

// Verb i with object j is held out when (i + j) % 4 == 3: one object per verb and one verb per
// object, so every phrase is also seen in training, never that combination.
bool held_out(size_t verb, size_t object) { return (verb + object) % 4 == 3; }

const Family& family(const std::string& name) {
  for (const Family& f : families())
    if (f.name == name) return f;
  fail("unknown synthetic task '", name, "'");
}

}  // namespace

std::vector<std::string> synthetic_task_names() {
  std::vector<std::string> names;
  for (const Family& f : families())
    if (!f.extra) names.push_back(f.name);
  return names;
}

std::vector<std::string> synthetic_all_task_names() {
  std::vector<std::string> names;
  for (const Family& f : families()) names.push_back(f.name);
  return names;
}

std::vector<Phrasing> synthetic_phrasings(const std::string& task) {
  const Family& f = family(task);
  std::vector<Phrasing> out;
  for (size_t i = 0; i < f.verbs.size(); ++i)
    for (size_t j = 0; j < f.objects.size(); ++j)
      out.push_back({f.verbs[i] + " " + f.objects[j] + ".", held_out(i, j)});
  return out;
}

SynthSet make_synthetic(const SynthOptions& o) {
  IFT_CHECK(o.train >= 0 && o.eval >= 0, "synthetic: example counts must be non-negative");
  std::mt19937_64 rng(o.seed);
  std::vector<Family> fams;
  if (o.tasks.empty()) {
    for (const Family& f : families())
      if (!f.extra) fams.push_back(f);
  } else {
    const std::vector<std::string> all = synthetic_all_task_names();
    for (const std::string& t : o.tasks) {
      IFT_CHECK(std::find(all.begin(), all.end(), t) != all.end(), "synthetic: unknown task '", t, "'; the tasks are ",
                [&] {
                  std::string s;
                  for (const std::string& n : all) s += (s.empty() ? "" : ", ") + n;
                  return s;
                }());
      fams.push_back(family(t));
    }
  }
  std::vector<std::vector<Phrasing>> phrasings;
  for (const Family& f : fams) phrasings.push_back(synthetic_phrasings(f.name));
  // The order families take turns in: round r of the cycle holds every family of weight > r, so
  // weights (2, 2, 1, 1, 1, 1) give 0 1 2 3 4 5 0 1, and equal weights 0 1 2 3 4 5.
  std::vector<int> weight(fams.size(), 1);
  for (const auto& entry : o.mix) {
    const std::string& task = entry.first;  // not a structured binding: clang 14 cannot capture one
    const int w = entry.second;
    const auto at = std::find_if(fams.begin(), fams.end(), [&](const Family& f) { return f.name == task; });
    IFT_CHECK(at != fams.end(), "synthetic: mix names unknown task '", task, "'");
    IFT_CHECK(w >= 0, "synthetic: mix weight of '", task, "' must be non-negative, got ", w);
    weight[static_cast<size_t>(at - fams.begin())] = w;
  }
  std::vector<size_t> train_cycle, even_cycle;
  for (int r = 0; r < *std::max_element(weight.begin(), weight.end()); ++r)
    for (size_t fi = 0; fi < fams.size(); ++fi)
      if (weight[fi] > r) train_cycle.push_back(fi);
  IFT_CHECK(!train_cycle.empty() || o.train == 0, "synthetic: every task has mix weight 0");
  for (size_t fi = 0; fi < fams.size(); ++fi) even_cycle.push_back(fi);
  auto make = [&](int64_t n, bool eval, std::vector<TaskExample>& out) {
    const std::vector<size_t>& cycle = eval ? even_cycle : train_cycle;
    for (int64_t k = 0; k < n; ++k) {
      const size_t fi = cycle[static_cast<size_t>(k) % cycle.size()];
      std::vector<const Phrasing*> pool;
      for (const Phrasing& p : phrasings[fi])
        if (p.held_out == eval) pool.push_back(&p);
      TaskExample e;
      e.task = fams[fi].name;
      e.instruction = pool[uniform(rng, 0, int(pool.size()) - 1)]->text;
      e.output = fams[fi].make(rng, e.input);
      out.push_back(std::move(e));
    }
  };
  SynthSet s;
  make(o.train, false, s.train);
  make(o.eval, true, s.eval);
  return s;
}

void write_task_jsonl(const std::filesystem::path& path, const std::vector<TaskExample>& examples) {
  std::string text;
  for (const TaskExample& e : examples)
    text += nlohmann::json{{"instruction", e.instruction}, {"input", e.input}, {"output", e.output}, {"task", e.task}}
                .dump() +
            "\n";
  write_text_atomically(path, text);
}

std::string tokenizer_corpus(const std::vector<TaskExample>& examples, const Template& t) {
  auto plain = [&](std::string s) {
    std::vector<std::string> markers = {"{bos}", "{eos}"};
    markers.insert(markers.end(), t.special_tokens.begin(), t.special_tokens.end());
    for (const std::string& m : markers)
      for (size_t at; (at = s.find(m)) != std::string::npos;) s.erase(at, m.size());
    return s;
  };
  std::string text;
  for (const TaskExample& e : examples) {
    const std::string& system =
        !e.input.empty() && !t.default_system_with_input.empty() ? t.default_system_with_input : t.default_system;
    std::string x = plain(t.bos);
    if (!system.empty()) x += plain(t.system_prefix) + system + plain(t.system_suffix);
    x += plain(t.user_prefix) + e.instruction;
    if (!e.input.empty()) x += plain(t.input_prefix) + e.input;
    x += plain(t.user_suffix) + plain(t.assistant_prefix) + e.output + plain(t.assistant_suffix);
    text += x + "\n\n";
  }
  return text;
}

std::vector<TaskExample> read_task_jsonl(const std::filesystem::path& path) {
  std::ifstream in(path);
  IFT_CHECK(in, path.string(), ": cannot open");
  std::vector<TaskExample> out;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path.string() + ":" + std::to_string(n);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": not valid JSON (", e.what(), ")");
    }
    IFT_CHECK(j.is_object(), where, ": expected a JSON object");
    auto field = [&](const char* key, bool required) -> std::string {
      if (!j.contains(key)) {
        IFT_CHECK(!required, where, ": missing field '", key, "'");
        return "";
      }
      IFT_CHECK(j[key].is_string(), where, ": field '", key, "' must be a string");
      return j[key].get<std::string>();
    };
    out.push_back({field("task", false), field("instruction", true), field("input", false), field("output", true)});
    if (out.back().task.empty()) out.back().task = "all";
  }
  return out;
}

}  // namespace ift
