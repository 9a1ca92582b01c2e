// The trainer: config validation, accumulation invariance, bitwise resume, checkpoints that
// survive a kill mid-write and open as Hugging Face model directories.
#include <cstring>
#include <fstream>

#include <sys/wait.h>

#include "engine/base/io.h"
#include "engine/checkpoint.h"
#include "engine/safetensors.h"
#include "engine/train/train_config.h"
#include "engine/train/trainer.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;
namespace fs = std::filesystem;

namespace {

// A small Alpaca JSONL file: 40 samples of a few words each.
fs::path write_data(const fs::path& dir) {
  const fs::path file = dir / "train.jsonl";
  std::ofstream out(file);
  const char* words[] = {"apple", "river", "stone", "cloud", "green", "quick", "seven", "north"};
  for (int i = 0; i < 40; ++i) {
    const std::string a = words[i % 8], b = words[(i * 3 + 1) % 8];
    out << R"({"instruction": "Repeat the words.", "input": ")" << a << " " << b << R"(", "output": ")" << a << " "
        << b << "\"}\n";
  }
  return file;
}

std::string base_config(const fs::path& dir, const fs::path& data) {
  return "out_dir: " + (dir / "run").string() + "\n" +
         "seed: 3\n"
         "tokenizer: " + fixture("tokenizers/llama2/tokenizer.model").string() + "\n" +
         "model:\n  init: {model_type: llama, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2,\n"
         "         intermediate_size: 32, vocab_size: 32000}\n"
         "data:\n  train: [" + data.string() + "]\n" +
         "seq_len: 64\nmicro_batch: 2\ngrad_accum: 2\nmax_steps: 4\nlog_every: 1\n"
         "optimizer: {lr: 1.0e-2, weight_decay: 0.1}\nschedule: {warmup_steps: 1, decay: cosine}\n";
}

std::vector<double> losses(const fs::path& metrics) {
  std::vector<double> out;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  }
  return out;
}

std::vector<float> weights(const fs::path& checkpoint) {
  const SafetensorsReader r(checkpoint / "model.safetensors");
  std::vector<float> all;
  for (const TensorInfo& t : r.tensors()) {
    const std::vector<float> v = r.read_f32(t.name);
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

}  // namespace

TEST_CASE("train config: unknown keys, wrong types and impossible values name the key", "[trainer]") {
  const std::string ok = "tokenizer: t.model\nmodel: {init: {model_type: llama}}\ndata: {train: d}\n";
  CHECK_NOTHROW(TrainConfig::parse(ok, "c.yaml"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok + "learning_rate: 1\n", "c.yaml"), Catch::Contains("unknown key 'learning_rate'"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok + "optimizer: {lr: fast}\n", "c.yaml"),
                    Catch::Contains("'optimizer.lr' must be a number, got 'fast'"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok + "optimizer: {betas: 1}\n", "c.yaml"),
                    Catch::Contains("unknown key 'optimizer.betas'"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok + "micro_batch: 0\n", "c.yaml"), Catch::Contains("'micro_batch' must be"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok + "schedule: {decay: exp}\n", "c.yaml"), Catch::Contains("schedule.decay"));
  CHECK_THROWS_WITH(TrainConfig::parse("data: {train: d}\n", "c.yaml"), Catch::Contains("'model' needs exactly one"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok + "seq_len: [1\n", "c.yaml"), Catch::Contains("c.yaml:"));
  const TrainConfig c = TrainConfig::parse(ok, "c.yaml", {"optimizer.lr=0.5", "max_steps=7", "data.eval=[a, b]"});
  CHECK(c.lr == 0.5f);
  CHECK(c.max_steps == 7);
  CHECK(c.data.eval == std::vector<std::string>{"a", "b"});
  CHECK_THROWS_WITH(TrainConfig::parse(ok, "c.yaml", {"optimizer.lr"}), Catch::Contains("expected key=value"));
  // The resolved YAML parses back to the same configuration.
  const TrainConfig back = TrainConfig::parse(c.to_yaml(), "resolved");
  CHECK(back.to_yaml() == c.to_yaml());
  // loss.fused: unset means the model's default (on above a 32k vocabulary); set, it survives to_yaml.
  CHECK_FALSE(c.fused_ce.has_value());
  const TrainConfig fused = TrainConfig::parse(ok + "loss: {fused: false}\n", "c.yaml");
  REQUIRE(fused.fused_ce.has_value());
  CHECK(*fused.fused_ce == false);
  CHECK(TrainConfig::parse(fused.to_yaml(), "resolved").fused_ce == std::optional<bool>(false));
  CHECK_THROWS_WITH(TrainConfig::parse(ok + "loss: {fused: maybe}\n", "c.yaml"),
                    Catch::Contains("'loss.fused' must be true or false"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok + "loss: {chunk: 3}\n", "c.yaml"), Catch::Contains("unknown key 'loss.chunk'"));
}

TEST_CASE("learning-rate schedule: warm-up, cosine to min_lr, linear, constant", "[trainer]") {
  TrainConfig c;
  c.lr = 1.0f, c.schedule.warmup_steps = 4, c.schedule.min_lr = 0.1f;
  CHECK(learning_rate(c, 0, 14) == Approx(0.25));
  CHECK(learning_rate(c, 3, 14) == Approx(1.0));
  CHECK(learning_rate(c, 4, 14) == Approx(1.0));
  CHECK(learning_rate(c, 13, 14) == Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 9 / 10))));
  CHECK(learning_rate(c, 8, 14) == Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 4 / 10))));
  CHECK(learning_rate(c, 14, 14) == Approx(0.1));
  c.schedule.decay = "linear";
  CHECK(learning_rate(c, 8, 14) == Approx(0.1 + 0.9 * (1 - 4.0 / 10)));
  c.schedule.decay = "constant";
  CHECK(learning_rate(c, 13, 14) == 1.0f);
}

TEST_CASE("gradient accumulation: 1 x 8 and 8 x 1 give the same training", "[trainer]") {
  const fs::path dir = temp_dir("accum");
  const fs::path data = write_data(dir);
  const std::string cfg = base_config(dir, data);
  // Same rows per step, split two ways; each step divides by the trained tokens of all 8 rows.
  train(TrainConfig::parse(cfg, "a", {"out_dir=" + (dir / "a").string(), "micro_batch=8", "grad_accum=1"}), false);
  train(TrainConfig::parse(cfg, "b", {"out_dir=" + (dir / "b").string(), "micro_batch=1", "grad_accum=8"}), false);
  const std::vector<double> la = losses(dir / "a/metrics.jsonl"), lb = losses(dir / "b/metrics.jsonl");
  REQUIRE(la.size() == 4);
  require_close("losses", la, lb, 1e-6, 1e-5);
  // The two splits sum the same gradients in another order (rounding differences of ~1e-7), and
  // AdamW's update lr m / (sqrt(v) + eps) turns them into weight differences of up to lr times
  // their relative size where a gradient nearly cancels to |g| ~ eps (an embedding entry summed over
  // the positions of its token): 2.3e-6 seen at lr 1e-2. So weights are held to lr / 1000 absolute.
  require_close("weights", weights(dir / "a/checkpoints" / checkpoint_name(4)),
                weights(dir / "b/checkpoints" / checkpoint_name(4)), 1e-5, 1e-4);
}

TEST_CASE("resume: N steps + resume + N steps equals 2N steps, bitwise", "[trainer]") {
  const fs::path dir = temp_dir("resume");
  const fs::path data = write_data(dir);
  const std::string cfg = base_config(dir, data);
  const auto straight = train(TrainConfig::parse(cfg, "a", {"out_dir=" + (dir / "a").string(), "max_steps=6"}), false);
  CHECK(straight.steps == 6);

  // A run killed right after the checkpoint of step 3: what it leaves is that checkpoint, the
  // metrics of later steps, and a half-written newer checkpoint.
  const TrainConfig c = TrainConfig::parse(cfg, "b", {"out_dir=" + (dir / "b").string(), "max_steps=6", "save_every=3",
                                                      "keep_last=5"});
  train(c, false);
  fs::remove_all(dir / "b/checkpoints" / checkpoint_name(6));
  fs::create_directories(dir / "b/checkpoints/.tmp-step-00000006");
  std::ofstream(dir / "b/checkpoints/.tmp-step-00000006/model.safetensors") << "torn";
  REQUIRE(list_checkpoints(dir / "b/checkpoints").back().filename() == checkpoint_name(3));

  const auto resumed = train(c, true);
  CHECK(resumed.steps == 6);
  CHECK(losses(dir / "a/metrics.jsonl") == losses(dir / "b/metrics.jsonl"));  // bitwise: == on doubles
  CHECK(weights(dir / "a/checkpoints" / checkpoint_name(6)) == weights(dir / "b/checkpoints" / checkpoint_name(6)));
  CHECK_FALSE(fs::exists(dir / "b/checkpoints/.tmp-step-00000006"));  // leftovers pruned
}

TEST_CASE("the emu backend trains like the cpu backend: fp32 the same run, bf16 close", "[trainer]") {
  const fs::path dir = temp_dir("backends");
  const fs::path data = write_data(dir);
  const std::string cfg = base_config(dir, data);
  const auto run = [&](const std::string& name, std::vector<std::string> set) {
    set.push_back("out_dir=" + (dir / name).string());
    set.push_back("max_steps=3");
    const TrainSummary s = train(TrainConfig::parse(cfg, name, set), false);
    CHECK(s.steps == 3);
    CHECK(s.skipped_steps == 0);
    return losses(dir / name / "metrics.jsonl");
  };
  const std::vector<double> cpu = run("cpu", {});
  const std::vector<double> emu = run("emu", {"backend=emu"});
  const std::vector<double> bf16 = run("bf16", {"backend=emu", "precision=bf16", "recompute=true"});
  REQUIRE(cpu.size() == 3);
  require_close("emu fp32 losses", emu, cpu, 0, 1e-4);
  require_close("emu bf16 losses", bf16, cpu, 0, 2e-2);
  // The checkpoint of a bf16 run holds the fp32 master weights.
  CHECK(weights(dir / "bf16/checkpoints" / checkpoint_name(3)).size() ==
        weights(dir / "cpu/checkpoints" / checkpoint_name(3)).size());
  CHECK_THROWS_WITH(TrainConfig::parse(cfg, "c.yaml", {"precision=bf16"}), Catch::Contains("must be fp32 on the cpu"));
}

TEST_CASE("a checkpoint is a Hugging Face model directory", "[trainer]") {
  const fs::path dir = temp_dir("ckpt");
  const fs::path data = write_data(dir);
  const auto s = train(TrainConfig::parse(base_config(dir, data), "c", {"max_steps=2", "keep_last=1"}), false);
  const fs::path ck = s.last_checkpoint;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "optimizer.safetensors",
                        "trainer_state.json", "config.yaml"})
    CHECK(fs::exists(ck / f));
  CHECK(list_checkpoints(dir / "run/checkpoints").size() == 1);  // keep_last
  const SafetensorsReader r(ck / "model.safetensors");
  CHECK(r.at("model.embed_tokens.weight").shape == std::vector<int64_t>{32000, 16});
  CHECK(r.at("model.layers.0.self_attn.q_proj.weight").shape == std::vector<int64_t>{16, 16});
  CHECK(r.at("lm_head.weight").shape == std::vector<int64_t>{32000, 16});
  const CpuModel<float> m = load_model(dir / "run");  // a run directory resolves to its newest checkpoint
  CHECK(m.config().vocab_size == 32000);
  CHECK(m.config().eos_token_id == 2);
  const auto cfg = nlohmann::json::parse(std::ifstream(ck / "config.json"));
  CHECK(cfg["architectures"][0] == "LlamaForCausalLM");
  CHECK(cfg["max_position_embeddings"] == 64);
}

// The gradient hook runs once per step for the one trainable group, after backward (the gradients
// are there) and before the step (zeroing them leaves the weights as initialised: no weight decay).
TEST_CASE("the trainer's gradient hook sits between backward and the step", "[trainer]") {
  const fs::path dir = temp_dir("hook");
  const fs::path data = write_data(dir);
  int calls = 0;
  size_t seen = 0;
  TrainHooks zero;
  zero.on_gradients = [&](const std::string& group, float* g, size_t n, BackendKind where) {
    ++calls, seen = n;
    CHECK(group == "default");
    CHECK(where == BackendKind::cpu);
    double norm = 0;
    for (size_t i = 0; i < n; ++i) norm += double(g[i]) * g[i], g[i] = 0.0f;
    CHECK(norm > 0);
  };
  const TrainConfig c = TrainConfig::parse(base_config(dir, data), "hook",
                                           {"out_dir=" + (dir / "run").string(), "max_steps=3", "save_every=3",
                                            "optimizer.weight_decay=0"});
  const TrainSummary s = train(c, false, nullptr, zero);
  CHECK(calls == 3);
  const CpuModel<float> trained = load_model(s.last_checkpoint);
  CHECK(seen == trained.layout().total);
  CpuModel<float> initial(trained.config());
  initial.init_random(3);  // the trainer's init for seed 3
  const std::vector<float> a = trained.params_to_host(), b = initial.params_to_host();
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

namespace {
std::string shell_quote(const std::string& s) { return "'" + s + "'"; }
}  // namespace

// What a cluster does: SIGTERM before a preemption, then the same command line again (requeue).
// The first attempt starts without a checkpoint, the signal saves one and exits 75, and the
// requeued attempt resumes to bitwise the losses of a run that was never stopped.
TEST_CASE("SIGTERM saves a checkpoint and exits 75; the requeued command line resumes bitwise", "[trainer]") {
  const fs::path dir = temp_dir("sigterm");
  const fs::path data = write_data(dir);
  const std::string cfg_text = base_config(dir, data);
  std::ofstream(dir / "a.yaml") << cfg_text;
  const std::string ift = IFT_BINARY;
  const std::string common = " --set max_steps=40 --set save_every=1000 --set log_every=1 --set micro_batch=1 --set grad_accum=1";
  REQUIRE(std::system((ift + " train " + shell_quote((dir / "a.yaml").string()) + " --set out_dir=" +
                       (dir / "straight").string() + common + " > /dev/null 2>&1").c_str()) == 0);
  // Start, wait for a few logged steps, SIGTERM, wait for the exit status.
  const std::string run = ift + " train " + shell_quote((dir / "a.yaml").string()) + " --resume --set out_dir=" +
                          (dir / "b").string() + common;
  const std::string script = "(" + run + " > " + (dir / "b.log").string() + " 2>&1 & pid=$!; " +
                             "while [ ! -f " + (dir / "b/metrics.jsonl").string() + " ] || [ $(wc -l < " +
                             (dir / "b/metrics.jsonl").string() + ") -lt 3 ]; do sleep 0.05; done; " +
                             "kill -TERM $pid; wait $pid; exit $?)";
  const int status = std::system(("bash -c " + shell_quote(script)).c_str());
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 75);
  CHECK(read_text(dir / "b.log").find("no checkpoint in") != std::string::npos);  // the first attempt started afresh
  REQUIRE(!list_checkpoints(dir / "b/checkpoints").empty());
  const int64_t stopped_at = load_trainer_state(list_checkpoints(dir / "b/checkpoints").back()).at("step").get<int64_t>();
  CHECK(stopped_at < 40);
  REQUIRE(std::system((run + " > /dev/null 2>&1").c_str()) == 0);  // the requeued attempt
  CHECK(losses(dir / "straight/metrics.jsonl").size() == 40);
  CHECK(losses(dir / "straight/metrics.jsonl") == losses(dir / "b/metrics.jsonl"));  // bitwise
}

TEST_CASE("resume refuses a changed checkpoint naming the file, and a changed config naming the fields", "[trainer]") {
  const fs::path dir = temp_dir("integrity");
  const fs::path data = write_data(dir);
  const std::string cfg = base_config(dir, data);
  const TrainConfig c = TrainConfig::parse(cfg, "c", {"out_dir=" + (dir / "run").string(), "max_steps=2"});
  train(c, false);
  const fs::path ckpt = list_checkpoints(dir / "run/checkpoints").back();
  CHECK_NOTHROW(verify_checkpoint(ckpt));
  // A changed config: lr and seq_len change the result, log_every does not.
  TrainConfig other = TrainConfig::parse(cfg, "c", {"out_dir=" + (dir / "run").string(), "max_steps=4",
                                                   "optimizer.lr=0.5", "log_every=7"});
  CHECK_THROWS_WITH(train(other, true), Catch::Contains("optimizer.lr") && Catch::Contains("max_steps") &&
                                            !Catch::Contains("log_every") && Catch::Contains("--resume-anyway"));
  other.resume_anyway = true;
  CHECK(train(other, true).steps == 4);
  // One flipped byte in the optimizer state.
  const fs::path last = list_checkpoints(dir / "run/checkpoints").back();
  {
    std::fstream f(last / "optimizer.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x7f');
  }
  CHECK_THROWS_WITH(verify_checkpoint(last), Catch::Contains("optimizer.safetensors") && Catch::Contains("changed"));
  TrainConfig more = other;
  more.max_steps = 5;
  CHECK_THROWS_WITH(train(more, true), Catch::Contains("optimizer.safetensors"));
  CHECK_THROWS_WITH(load_model(last), Catch::Contains("checksums") || Catch::Contains("sha256"));
}

// The commands on the emu backend: a trained checkpoint answers the same through `ift generate`
// and scores the same through `ift eval --tasks` as on cpu (fp32: the same greedy tokens; the
// logits agree to ~1e-6, far from the margins between the top tokens of a trained model), and
// `ift bench train --backend emu` runs.
TEST_CASE("generate, eval --tasks and bench train run on emu and equal cpu", "[trainer]") {
  const fs::path dir = temp_dir("emu-commands");
  const fs::path data = write_data(dir);
  const TrainConfig c = TrainConfig::parse(base_config(dir, data), "c", {"out_dir=" + (dir / "run").string(),
                                                                        "max_steps=6", "optimizer.lr=2.0e-2"});
  train(c, false);
  const std::string ift = IFT_BINARY, model = (dir / "run").string();
  const auto output = [&](const std::string& args, const fs::path& out) {
    const int rc = std::system((ift + " " + args + " > " + out.string() + " 2>&1").c_str());
    INFO(args << "\n" << read_text(out));
    REQUIRE(rc == 0);
    return read_text(out);
  };
  const std::string gen = " generate --model " + model + " --prompt 'Repeat the words.' --input 'apple river'" +
                          " --max-new-tokens 12 --backend ";
  const std::string cpu_text = output(gen + "cpu", dir / "gen-cpu.txt");
  CHECK(!cpu_text.empty());
  CHECK(output(gen + "emu", dir / "gen-emu.txt") == cpu_text);
  std::ofstream(dir / "tasks.jsonl")
      << R"({"instruction": "Repeat the words.", "input": "apple river", "output": "apple river", "task": "repeat"})" "\n"
      << R"({"instruction": "Repeat the words.", "input": "stone north", "output": "stone north", "task": "repeat"})" "\n";
  const std::string eval = " eval --model " + model + " --tasks " + (dir / "tasks.jsonl").string() +
                           " --max-new-tokens 10 --backend ";
  output(eval + "cpu --out " + (dir / "eval-cpu.json").string(), dir / "eval-cpu.txt");
  output(eval + "emu --out " + (dir / "eval-emu.json").string(), dir / "eval-emu.txt");
  const auto answers = [](const fs::path& f) {
    const auto j = nlohmann::json::parse(read_text(f));
    std::vector<std::string> out;
    for (const auto& e : j["tasks"]["repeat"]["examples"]) out.push_back(e["answer"].get<std::string>());
    return out;
  };
  CHECK(answers(dir / "eval-cpu.json").size() == 2);
  CHECK(answers(dir / "eval-emu.json") == answers(dir / "eval-cpu.json"));
  const std::string bench = output(" bench train --model llama-demo --batch 1 --seq-len 16 --steps 1 --backend emu "
                                   "--precision bf16 --json", dir / "bench.txt");
  const auto j = nlohmann::json::parse(bench.substr(bench.find('{')));
  CHECK(j["backend"] == "emu");
  CHECK(j["tokens_per_s"].get<double>() > 0);
  CHECK(j["allocated_mib"].get<double>() > 0);
}
