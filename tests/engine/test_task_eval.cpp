// Exact-match scoring of `ift eval --tasks`, and the commands around the demo (synth, eval, report)
// run end to end on a tiny model.
#include "engine/train/task_eval.h"

#include <cstdlib>
#include <fstream>

#include "engine/checkpoint.h"
#include "engine/base/io.h"
#include "tests/support.h"

using namespace ift;

TEST_CASE("task eval: exact match ignores surrounding whitespace only", "[task_eval]") {
  CHECK(exact_match(" 42\n", "42"));
  CHECK(exact_match("cow tree", "cow tree "));
  CHECK_FALSE(exact_match("cow  tree", "cow tree"));
  CHECK_FALSE(exact_match("Cow tree", "cow tree"));
  CHECK_FALSE(exact_match("", "0"));
  CHECK(exact_match("\t", ""));
}

TEST_CASE("task eval: scores per task and overall, answers kept in order", "[task_eval]") {
  const std::vector<TaskExample> ex = {
      {"add", "Add.", "1 and 2", "3"},  {"add", "Add.", "2 and 2", "4"}, {"count", "Count.", "a b", "2"},
      {"add", "Add.", "5 and 5", "10"}, {"count", "Count.", "a", "1"},
  };
  // An answerer that gets additions right except 5 + 5, and always says "2" for counts.
  const TaskEvalReport r = score_tasks(ex, [](const TaskExample& e) -> std::string {
    if (e.task == "count") return "2";
    return e.input == "5 and 5" ? "55" : e.output + " ";
  });
  REQUIRE(r.tasks.size() == 2);
  CHECK(r.tasks[0].task == "add");
  CHECK(r.tasks[0].correct == 2);
  CHECK(r.tasks[0].total == 3);
  CHECK(r.tasks[1].task == "count");
  CHECK(r.tasks[1].correct == 1);
  CHECK(r.overall.correct == 3);
  CHECK(r.overall.total == 5);
  CHECK(r.overall.accuracy() == Approx(0.6));
  CHECK(r.answers[3] == "55");
  const nlohmann::json j = r.to_json(ex, 1);
  CHECK(j["overall"]["accuracy"].get<double>() == Approx(0.6));
  CHECK(j["tasks"]["add"]["examples"].size() == 1);
  CHECK(j["tasks"]["count"]["examples"][0]["answer"] == "2");
  CHECK(j["tasks"]["count"]["examples"][0]["correct"] == true);
}

TEST_CASE("demo commands: synth, tokenizer, train, eval --tasks, eval --data, report", "[task_eval][cli]") {
  const auto dir = test::temp_dir("demo-cli");
  const std::string ift = IFT_BINARY, d = dir.string();
  auto run = [&](const std::string& args) {
    const std::string cmd = ift + " " + args + " >> " + d + "/log.txt 2>&1";
    INFO(cmd);
    return std::system(cmd.c_str());
  };
  REQUIRE(run("synth --out " + d + "/data --train 240 --eval 12 --seed 1") == 0);
  REQUIRE(run("tokenizer train --input " + d + "/data/corpus.txt --vocab-size 400 --out " + d + "/tok --quiet") == 0);
  {
    std::ofstream(dir / "c.yaml") << "out_dir: " << d << "/run\n"
                                  << "model: {init: {model_type: llama, hidden_size: 32, num_hidden_layers: 1,"
                                     " num_attention_heads: 2, intermediate_size: 64, max_position_embeddings: 128}}\n"
                                  << "tokenizer: " << d << "/tok.model\n"
                                  << "data: {train: [" << d << "/data/train.jsonl], eval: [" << d
                                  << "/data/train.jsonl]}\n"
                                  << "seq_len: 128\nmicro_batch: 2\nmax_steps: 3\nlog_every: 1\n"
                                  << "sample_prompts: [Add the numbers.]\nsample_max_tokens: 4\n";
  }
  REQUIRE(run("train " + d + "/c.yaml") == 0);
  REQUIRE(run("eval --model " + d + "/run --tasks " + d + "/data/eval_tasks.jsonl --max-new-tokens 4 --out " + d +
              "/run/eval_tasks.json") == 0);
  const nlohmann::json tasks = nlohmann::json::parse(read_text(dir / "run" / "eval_tasks.json"));
  CHECK(tasks["overall"]["total"] == 12);
  CHECK(tasks["tasks"].size() == 6);
  REQUIRE(run("eval --model " + d + "/run --data " + d + "/run/data --out " + d + "/loss.json") != 0);  // a dir of dirs
  // The prepared eval data sits in run/data/eval-<hash>/.
  std::filesystem::path prepared;
  for (const auto& e : std::filesystem::directory_iterator(dir / "run" / "data"))
    if (e.path().filename().string().rfind("eval-", 0) == 0) prepared = e.path();
  REQUIRE(!prepared.empty());
  REQUIRE(run("eval --model " + d + "/run --data " + prepared.string() + " --out " + d + "/loss.json") == 0);
  const nlohmann::json loss = nlohmann::json::parse(read_text(dir / "loss.json"));
  CHECK(loss["loss"].get<double>() > 0);
  CHECK(loss["perplexity"].get<double>() == Approx(std::exp(loss["loss"].get<double>())));

  REQUIRE(run("report " + d + "/run") == 0);
  const std::string html = read_text(dir / "run" / "report.html");
  CHECK(std::count(html.begin(), html.end(), '\n') >= 1);
  size_t svgs = 0;
  for (size_t at = 0; (at = html.find("<svg", at)) != std::string::npos; ++at) ++svgs;
  CHECK(svgs == 4);
  // Three metrics lines, so the loss curve has three points.
  const size_t poly = html.find("<polyline");
  REQUIRE(poly != std::string::npos);
  const std::string pts = html.substr(html.find("points='", poly) + 8, html.find("'/>", poly) - html.find("points='", poly) - 8);
  CHECK(std::count(pts.begin(), pts.end(), ',') == 3);
  CHECK(html.find("Instruction following") != std::string::npos);
  CHECK(html.find("Add the numbers.") != std::string::npos);  // the sample generations
  CHECK(html.find("http") == html.find("http://www.w3.org/2000/svg"));  // no external assets

  CHECK(run("report " + d + "/nowhere") != 0);
  CHECK(run("eval --model " + d + "/run") != 0);  // neither --data nor --tasks
}
