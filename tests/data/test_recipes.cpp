// The paper recipes of configs/recipes/: every one parses with the trainer's strict config loader,
// states the paper's hyper-parameters, and trains two steps at a toy scale (a tiny model and data,
// the recipe's optimizer, schedule, template and mask unchanged).
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "data/template.h"
#include "engine/train/train_config.h"
#include "engine/train/trainer.h"
#include "tests/support.h"
#include "tokenizer/tokenizer.h"

using namespace ift;
namespace fs = std::filesystem;

namespace {

const fs::path kRoot = fs::path(IFT_FIXTURES_DIR).parent_path().parent_path();

std::vector<fs::path> recipes() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(kRoot / "configs" / "recipes"))
    if (e.path().extension() == ".yaml") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("recipes: every config parses and carries its paper's hyper-parameters", "[recipes]") {
  const auto files = recipes();
  std::map<std::string, TrainConfig> c;
  for (const fs::path& f : files) {
    INFO(f.string());
    c.emplace(f.stem().string(), TrainConfig::load(f));
    CHECK_THAT(read(f), Catch::Contains("et al."));  // each cites its paper
  }
  REQUIRE(c.size() >= 4);
  const TrainConfig& alpaca = c.at("alpaca");
  CHECK(alpaca.lr == 2e-5f);
  CHECK(alpaca.epochs == 3.0);
  CHECK(alpaca.micro_batch * alpaca.grad_accum == 128);
  CHECK(alpaca.seq_len == 512);
  CHECK(alpaca.schedule.decay == "cosine");
  CHECK(alpaca.adamw.weight_decay == 0.0f);
  CHECK(alpaca.data.tmpl == "alpaca");
  CHECK(alpaca.schedule.warmup_ratio == 0.03);
  CHECK(warmup_steps(alpaca, 1219) == 37);  // the README's run: 52002 / 128 * 3 steps

  const TrainConfig& lima = c.at("lima");
  CHECK(lima.epochs == 15.0);
  CHECK(lima.lr == 1e-5f);
  CHECK(lima.schedule.decay == "linear");
  CHECK(lima.schedule.min_lr == 1e-6f);
  CHECK(lima.schedule.warmup_steps == 0);
  CHECK(lima.adamw.beta2 == 0.95f);
  CHECK(lima.adamw.weight_decay == 0.1f);
  CHECK(lima.micro_batch * lima.grad_accum == 32);
  CHECK(lima.seq_len == 2048);
  CHECK(lima.residual_dropout == 0.3f);
  CHECK(lima.residual_dropout_schedule == "linear");
  // 0.0 at the bottom layer rising linearly to 0.3 at the last (LLaMA-65B has 80 layers).
  const std::vector<float> p = residual_dropout_per_layer(lima, 80);
  REQUIRE(p.size() == 80);
  CHECK(p.front() == 0.0f);
  CHECK(p.back() == Approx(0.3).epsilon(1e-6));
  CHECK(p[40] == Approx(0.3 * 40 / 79).epsilon(1e-6));

  const TrainConfig& vicuna = c.at("vicuna");
  CHECK(vicuna.data.format == "sharegpt");
  CHECK(vicuna.data.mask == "outputs");
  CHECK(vicuna.lr == 2e-5f);
  CHECK(vicuna.micro_batch * vicuna.grad_accum == 128);
  CHECK(vicuna.schedule.warmup_ratio == 0.03);

  const TrainConfig& guanaco = c.at("guanaco_qlora");
  CHECK(guanaco.lr == 2e-4f);
  CHECK(guanaco.schedule.decay == "constant");
  CHECK(guanaco.adamw.max_grad_norm == 0.3f);
  CHECK(guanaco.max_steps == 1875);
  CHECK(guanaco.micro_batch * guanaco.grad_accum == 16);
}

// The LoRA demo's config (tools/demo_lora.sh) parses with the strict loader and is the LoRA run on
// the demo's base it says it is.
TEST_CASE("recipes: configs/demo-lora.yaml is adapters with dropout on the demo's model", "[recipes]") {
  const TrainConfig demo = TrainConfig::load(kRoot / "configs" / "demo.yaml");
  const TrainConfig lora = TrainConfig::load(kRoot / "configs" / "demo-lora.yaml");
  CHECK(lora.model_path == demo.out_dir);
  CHECK(lora.lora.enabled());
  CHECK(lora.lora.dropout == 0.05);
  CHECK(lora.lora.targets.size() == 7);
  CHECK(lora.data.train.size() == 2);
  CHECK(lora.data.weights == std::vector<double>{1.0, 0.2});
  CHECK(lora.data.tmpl == demo.data.tmpl);
  CHECK(lora.seq_len == demo.seq_len);
}

TEST_CASE("recipes: the vicuna_v1.1 template renders FastChat's format and trains the assistant turns", "[recipes]") {
  const auto tok = load_tokenizer(test::fixture("tokenizers/llama2/tokenizer.model"));
  const ChatFormatter f(find_template((kRoot / "configs/recipes/vicuna_v1.1.jinja").string()), *tok);
  Conversation c;
  c.turns = {{Role::user, "Hi", ""}, {Role::assistant, "Hello.", ""}, {Role::user, "Bye", ""}, {Role::assistant, "Bye!", ""}};
  const ChatFormatter::Rendering r = f.render_text(c, MaskMode::outputs);
  CHECK(r.text ==
        "<s>A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: Hi ASSISTANT: Hello.</s>USER: Bye ASSISTANT: "
        "Bye!</s>");
  REQUIRE(r.spans.size() == 2);
  CHECK(r.text.substr(r.spans[0].first, r.spans[0].second - r.spans[0].first) == " Hello.</s>");
  CHECK(r.text.substr(r.spans[1].first, r.spans[1].second - r.spans[1].first) == " Bye!</s>");
}

TEST_CASE("recipes: each trains two steps at a toy scale", "[recipes]") {
  const fs::path dir = test::temp_dir("recipes");
  {
    std::ofstream a(dir / "alpaca.jsonl"), s(dir / "sharegpt.jsonl");
    for (int i = 0; i < 12; ++i) {
      const std::string n = std::to_string(i);
      a << R"({"instruction": "Count to )" << n << R"(.", "input": "", "output": "1 to )" << n << "\"}\n";
      s << R"({"conversations": [{"from": "human", "value": "Say )" << n << R"("}, {"from": "gpt", "value": ")" << n
        << R"("}, {"from": "human", "value": "Again"}, {"from": "gpt", "value": ")" << n << " " << n << "\"}]}\n";
    }
  }
  for (const fs::path& f : recipes()) {
    INFO(f.string());
    YAML::Node root = YAML::LoadFile(f.string());
    const std::string name = f.stem().string();
    root["out_dir"] = (dir / name).string();
    root["model"] = YAML::Load(
        "{init: {model_type: llama, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, "
        "intermediate_size: 32, vocab_size: 32000}}");
    root["tokenizer"] = test::fixture("tokenizers/llama2/tokenizer.model").string();
    const bool alpaca_format = root["data"]["format"].as<std::string>() == "alpaca";
    root["data"]["train"] = YAML::Load("[" + (dir / (alpaca_format ? "alpaca.jsonl" : "sharegpt.jsonl")).string() + "]");
    const std::string tmpl = root["data"]["template"].as<std::string>();
    if (tmpl.ends_with(".jinja")) root["data"]["template"] = (kRoot / tmpl).string();
    root["seq_len"] = 64;
    root["micro_batch"] = 2;
    root["grad_accum"] = 1;
    root["max_steps"] = 2;
    root["log_every"] = 1;
    root["save_every"] = 0;
    root["threads"] = 1;
    if (root["schedule"]["warmup_steps"]) root["schedule"]["warmup_steps"] = 1;
    YAML::Emitter e;
    e << root;
    const TrainConfig c = TrainConfig::parse(e.c_str(), f.string());
    const TrainSummary s = train(c, false);
    CHECK(s.steps == 2);
    CHECK(s.skipped_steps == 0);
    CHECK(std::isfinite(s.last_loss));
    CHECK(s.last_loss > 0);
  }
}

TEST_CASE("ift train with template auto uses the chat_template of the tokenizer's directory", "[recipes][template]") {
  const fs::path dir = test::temp_dir("train-auto");
  fs::create_directories(dir / "tok");
  fs::copy_file(test::fixture("tokenizers/llama2/tokenizer.model"), dir / "tok" / "tokenizer.model");
  std::ifstream src(test::fixture("chat_templates/zephyr.jinja"));
  const std::string zephyr((std::istreambuf_iterator<char>(src)), std::istreambuf_iterator<char>());
  std::ofstream(dir / "tok" / "tokenizer_config.json")
      << nlohmann::json{{"chat_template", zephyr}, {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"legacy", false}}.dump();
  {
    std::ofstream s(dir / "train.jsonl");
    for (int i = 0; i < 8; ++i)
      s << R"({"messages": [{"role": "user", "content": "Say )" << i << R"("}, {"role": "assistant", "content": ")" << i
        << "\"}]}\n";
  }
  const std::string yaml = "out_dir: " + (dir / "run").string() + "\ntokenizer: " + (dir / "tok").string() +
                           "\nmodel:\n  init: {model_type: llama, hidden_size: 16, num_hidden_layers: 1, "
                           "num_attention_heads: 2, intermediate_size: 32, vocab_size: 32000}\n"
                           "data:\n  train: [" + (dir / "train.jsonl").string() + "]\n  template: auto\n"
                           "seq_len: 64\nmicro_batch: 2\nmax_steps: 2\nthreads: 1\n";
  const TrainSummary s = train(TrainConfig::parse(yaml, "auto.yaml"), false);
  CHECK(s.steps == 2);
  // The data the run prepared was rendered with the model's template.
  int reports = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir / "run" / "data")) {
    if (e.path().filename() != "report.json") continue;
    std::ifstream in(e.path());
    CHECK_THAT(nlohmann::json::parse(in)["template"].get<std::string>(),
               Catch::Contains("chat_template of") && Catch::Contains("tok/tokenizer_config.json"));
    ++reports;
  }
  CHECK(reports == 1);
}
