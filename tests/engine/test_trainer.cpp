// The trainer: config validation, accumulation invariance, bitwise resume, checkpoints that
// survive a kill mid-write and open as Hugging Face model directories.
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>

#include <sys/wait.h>

#include "data/prepare.h"
#include "engine/base/io.h"
#include "engine/checkpoint.h"
#include "engine/safetensors.h"
#include "engine/train/train_config.h"
#include "engine/train/trainer.h"
#include "tests/engine/train_support.h"
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
  // `attention: cudnn` is the cuda backend's, in bf16: refused by field elsewhere, before any step.
  CHECK(TrainConfig::parse(cfg, "c.yaml", {}).attention == "ift");
  CHECK_THROWS_WITH(TrainConfig::parse(cfg, "c.yaml", {"attention=flash"}),
                    Catch::Contains("c.yaml: 'attention' must be ift or cudnn (got 'flash')"));
  CHECK_THROWS_WITH(TrainConfig::parse(cfg, "c.yaml", {"attention=cudnn"}),
                    Catch::Contains("'attention' cudnn runs on backend cuda only (backend is cpu)"));
  CHECK_THROWS_WITH(TrainConfig::parse(cfg, "c.yaml", {"attention=cudnn", "backend=emu", "precision=bf16"}),
                    Catch::Contains("'attention' cudnn runs on backend cuda only (backend is emu)"));
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
}  // namespace

// What a cluster does: SIGTERM before a preemption, then the same command line again (requeue).
// The first attempt starts without a checkpoint, the signal saves one and exits 75, and the
// requeued attempt resumes to bitwise the losses of a run that was never stopped.
TEST_CASE("SIGTERM saves a checkpoint and exits 75 - the requeued command line resumes bitwise", "[trainer]") {
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

// A full disk or a failing device during a checkpoint: every write of the checkpoint in turn fails
// (the seam of engine/base/io.h, errno ENOSPC then EIO, as write(2) reports them).
TEST_CASE("ENOSPC or EIO at any write of a checkpoint: the error names the file, nothing partial, the previous one intact",
          "[trainer]") {
  const fs::path dir = temp_dir("enospc");
  const fs::path data = write_data(dir);
  const TrainConfig c = TrainConfig::parse(base_config(dir, data), "e", {"out_dir=" + (dir / "run").string(),
                                                                         "max_steps=2"});
  train(c, false);
  const fs::path root = dir / "run/checkpoints", prev = root / checkpoint_name(2);
  REQUIRE(list_checkpoints(root) == std::vector<fs::path>{prev});
  const std::vector<float> prev_weights = weights(prev);

  // The contents of a next checkpoint, from the previous one.
  const Model<CpuBackend<float>> model = load_model(prev);
  const std::vector<float> params = model.params_to_host();
  const OptimizerState opt = load_optimizer_state(prev);
  CheckpointContents cc;
  cc.config = &model.config(), cc.layout = &model.layout(), cc.params = params, cc.optimizer = &opt;
  cc.trainer_state = load_trainer_state(prev);
  cc.tokenizer_files = {prev / "tokenizer.model"};
  cc.config_yaml = read_text(prev / "config.yaml");
  const fs::path next = root / checkpoint_name(3);

  for (const int err : {ENOSPC, EIO}) {
    int failures = 0;
    for (int64_t nth = 1;; ++nth) {
      INFO("errno " << err << ", write " << nth);
      inject_write_failure(nth, err, checkpoint_name(3));
      try {
        write_checkpoint(next, cc);
      } catch (const Error& e) {
        ++failures;
        const std::string msg = e.what();
        CHECK(msg.find(next.string()) != std::string::npos);       // the checkpoint
        CHECK(msg.find(std::strerror(err)) != std::string::npos);  // the system's reason
        CHECK((msg.find(".json") != std::string::npos || msg.find(".safetensors") != std::string::npos ||
               msg.find(".model") != std::string::npos || msg.find(".yaml") != std::string::npos));  // the file
        CHECK(msg.find("previous checkpoints are intact") != std::string::npos);
        CHECK(list_checkpoints(root) == std::vector<fs::path>{prev});
        for (const auto& e2 : fs::directory_iterator(root)) CHECK(e2.path() == prev);  // no .tmp-, no step-3
        CHECK_NOTHROW(verify_checkpoint(prev));
        continue;
      }
      // The failure came after the last write: the checkpoint is complete.
      CHECK(write_failure_pending());
      inject_write_failure(0, 0);
      CHECK_NOTHROW(verify_checkpoint(next));
      fs::remove_all(next);
      break;
    }
    CHECK(failures >= 8);  // every file of the checkpoint was hit at least once
  }
  CHECK(weights(prev) == prev_weights);
}

TEST_CASE("on_save_error: stop ends the run at a failed checkpoint, continue trains on", "[trainer]") {
  const fs::path dir = temp_dir("save-error");
  const fs::path data = write_data(dir);
  const std::string cfg = base_config(dir, data);
  CHECK_THROWS_WITH(TrainConfig::parse(cfg, "x.yaml", {"on_save_error=retry"}),
                    Catch::Contains("x.yaml") && Catch::Contains("on_save_error"));
  for (const std::string mode : {"stop", "continue"}) {
    INFO("on_save_error: " << mode);
    const fs::path out = dir / mode;
    const TrainConfig c = TrainConfig::parse(cfg, mode, {"out_dir=" + out.string(), "max_steps=4", "save_every=1",
                                                         "keep_last=5", "on_save_error=" + mode});
    inject_write_failure(1, ENOSPC, checkpoint_name(2));  // the first write of step 2's checkpoint
    const fs::path root = out / "checkpoints";
    if (mode == "stop") {
      CHECK_THROWS_WITH(train(c, false), Catch::Contains(checkpoint_name(2)) && Catch::Contains("No space left"));
      CHECK(list_checkpoints(root) == std::vector<fs::path>{root / checkpoint_name(1)});
      CHECK_NOTHROW(verify_checkpoint(root / checkpoint_name(1)));
    } else {
      const TrainSummary s = train(c, false);
      CHECK(s.steps == 4);
      CHECK(s.failed_saves == 1);
      CHECK(list_checkpoints(root) == std::vector<fs::path>{root / checkpoint_name(1), root / checkpoint_name(3),
                                                            root / checkpoint_name(4)});
    }
    CHECK_FALSE(write_failure_pending());
    for (const auto& e : fs::directory_iterator(root)) CHECK_FALSE(e.path().filename().string().starts_with("."));
  }
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

TEST_CASE("recipe options: warmup_ratio, train_on_eos, mixtures, val_split, loss and noise fields are checked",
          "[trainer]") {
  const std::string ok = "tokenizer: t.model\nmodel: {init: {model_type: llama}}\ndata: {train: [a, b]}\n";
  const TrainConfig d = TrainConfig::parse(ok, "c.yaml");
  CHECK(d.data.tmpl == "auto");  // the model's chat_template where it has one, else alpaca
  CHECK(d.data.train_on_eos == "all");
  CHECK(d.loss == "token");
  CHECK(d.neftune_alpha == 0.0f);
  CHECK(d.residual_dropout == 0.0f);
  CHECK_THROWS_WITH(TrainConfig::parse(ok + "schedule: {warmup_ratio: 1.5}\n", "c.yaml"),
                    Catch::Contains("'schedule.warmup_ratio' must be in [0, 1)"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok + "schedule: {warmup_ratio: 0.1, warmup_steps: 3}\n", "c.yaml"),
                    Catch::Contains("cannot both be set"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok, "c.yaml", {"data.train_on_eos=first"}),
                    Catch::Contains("'data.train_on_eos' must be all, last or none (got 'first')"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok, "c.yaml", {"data.weights=[1]"}),
                    Catch::Contains("1 weights for 2 files"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok, "c.yaml", {"data.weights=[1, -2]"}), Catch::Contains("'data.weights' must be >= 0"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok, "c.yaml", {"data.weights=[1, x]"}), Catch::Contains("must hold numbers, got 'x'"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok, "c.yaml", {"data.val_split=0.1", "data.eval=[e]"}),
                    Catch::Contains("'data.val_split' and data.eval cannot both be set"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok, "c.yaml", {"loss.average=sample"}), Catch::Contains("'loss.average' must be token or sequence"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok, "c.yaml", {"residual_dropout=1"}), Catch::Contains("'residual_dropout' must be in [0, 1)"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok, "c.yaml", {"residual_dropout_schedule=cosine"}),
                    Catch::Contains("must be linear or constant"));
  CHECK_THROWS_WITH(TrainConfig::parse(ok, "c.yaml", {"neftune_alpha=-5"}), Catch::Contains("'neftune_alpha' must be >= 0"));
  const TrainConfig all = TrainConfig::parse(ok, "c.yaml", {"data.weights=[0.5, 2]", "data.val_split=0.1", "loss.average=sequence",
                                                           "residual_dropout=0.3", "neftune_alpha=5", "data.train_on_eos=last",
                                                           "schedule.warmup_ratio=0.03"});
  CHECK(TrainConfig::parse(all.to_yaml(), "resolved").to_yaml() == all.to_yaml());
  CHECK(all.data.weights == std::vector<double>{0.5, 2.0});

  // Warm-up as a ratio: ceil(ratio * steps), as Hugging Face's get_warmup_steps.
  TrainConfig c;
  c.lr = 1.0f, c.schedule.warmup_ratio = 0.25;  // 14 steps: ceil(3.5) = 4, the schedule tested above
  CHECK(warmup_steps(c, 14) == 4);
  CHECK(learning_rate(c, 0, 14) == Approx(0.25));
  CHECK(learning_rate(c, 4, 14) == Approx(1.0));
  c.schedule.warmup_ratio = 0.03;
  CHECK(warmup_steps(c, 1219) == 37);
  CHECK(warmup_steps(c, 10) == 1);

  // LIMA's residual dropout: linear from 0 at the bottom layer to p at the top; constant: p everywhere.
  c.residual_dropout = 0.3f;
  CHECK(residual_dropout_per_layer(c, 4) == std::vector<float>{0.0f, 0.1f, 0.2f, 0.3f});
  CHECK(residual_dropout_per_layer(c, 1) == std::vector<float>{0.3f});
  c.residual_dropout_schedule = "constant";
  CHECK(residual_dropout_per_layer(c, 3) == std::vector<float>{0.3f, 0.3f, 0.3f});
  c.residual_dropout = 0;
  CHECK(residual_dropout_per_layer(c, 3).empty());
}

TEST_CASE("resume with residual dropout and NEFTune on is bitwise - the noise changes training", "[trainer]") {
  const fs::path dir = temp_dir("resume-noise");
  const fs::path data = write_data(dir);
  const std::string cfg = base_config(dir, data) + "residual_dropout: 0.3\nresidual_dropout_schedule: constant\n"
                                                   "neftune_alpha: 5.0\n";
  train(TrainConfig::parse(cfg, "a", {"out_dir=" + (dir / "a").string()}), false);
  const TrainConfig c = TrainConfig::parse(cfg, "b", {"out_dir=" + (dir / "b").string(), "save_every=2", "keep_last=5"});
  train(c, false);
  fs::remove_all(dir / "b/checkpoints" / checkpoint_name(4));
  train(c, true);
  CHECK(losses(dir / "a/metrics.jsonl") == losses(dir / "b/metrics.jsonl"));
  CHECK(weights(dir / "a/checkpoints" / checkpoint_name(4)) == weights(dir / "b/checkpoints" / checkpoint_name(4)));
  // The same run without the noise trains to other weights (the noise is really applied).
  train(TrainConfig::parse(base_config(dir, data), "clean", {"out_dir=" + (dir / "clean").string()}), false);
  CHECK(losses(dir / "clean/metrics.jsonl") != losses(dir / "a/metrics.jsonl"));
}

TEST_CASE("a validation split, a weighted mixture and epoch-based steps", "[trainer]") {
  // mixture_indices: weight 2.5 over the 8 records left after holding out 2 of 10.
  const auto [train_idx, val_idx] = mixture_indices(10, 2.5, 0.2, 7, 0);
  CHECK(val_idx.size() == 2);
  CHECK(train_idx.size() == 8 * 2 + 4);
  for (int64_t v : val_idx) CHECK(std::count(train_idx.begin(), train_idx.end(), v) == 0);
  std::vector<int> copies(10, 0);
  for (int64_t t : train_idx) ++copies[t];
  int thrice = 0;
  for (int i = 0; i < 10; ++i) {
    const bool held = std::count(val_idx.begin(), val_idx.end(), i) > 0;
    CHECK((held ? copies[i] == 0 : (copies[i] == 2 || copies[i] == 3)));
    thrice += copies[i] == 3;
  }
  CHECK(thrice == 4);
  CHECK(mixture_indices(10, 2.5, 0.2, 7, 0) == std::make_pair(train_idx, val_idx));  // deterministic
  CHECK(mixture_indices(10, 0.0, 0.0, 7, 0).first.empty());
  CHECK(mixture_indices(10, 0.5, 0.0, 7, 1).first.size() == 5);

  const fs::path dir = temp_dir("val-split");
  const fs::path data = write_data(dir);  // 40 records
  const fs::path second = dir / "second.jsonl";
  std::ofstream(second) << R"({"instruction": "Say one.", "input": "", "output": "one"})" "\n"
                        << R"({"instruction": "Say two.", "input": "", "output": "two"})" "\n";
  // 0.1 of each file held out (4 of 40, 0 of 2), the second file weighted 3: 36 + 6 samples train.
  const std::string cfg = base_config(dir, data);
  const TrainConfig c = TrainConfig::parse(cfg, "v", {"out_dir=" + (dir / "v").string(), "data.train=[" + data.string() +
                                           ", " + second.string() + "]", "data.weights=[1, 3]", "data.val_split=0.1",
                                           "max_steps=0", "epochs=1", "data.pack=none"});
  const TrainSummary s = train(c, false);
  CHECK(s.last_eval_loss > 0);  // evaluated on the held-out records
  nlohmann::json report;
  for (const auto& e : fs::recursive_directory_iterator(dir / "v" / "data"))
    if (e.path().filename() == "report.json") report = nlohmann::json::parse(read_text(e.path()));
  CHECK(report["validation_samples"] == 4);
  CHECK(report["samples_kept"] == 36 + 6);
  // An epoch-based run: 42 rows (pack none: one sample a row), 4 rows a step: ceil(42 / 4) = 11.
  CHECK(s.steps == 11);
}

TEST_CASE("per-sequence loss averaging: the mean of the samples' mean token losses", "[trainer]") {
  const fs::path dir = temp_dir("per-seq");
  const fs::path data = write_data(dir);
  const std::string cfg = base_config(dir, data);
  // lr 0: the weights stay, so both runs see the same model and data; the losses differ only by
  // their averaging.
  const auto run = [&](const std::string& name, const std::string& loss) {
    train(TrainConfig::parse(cfg, name, {"out_dir=" + (dir / name).string(), "loss.average=" + loss, "max_steps=1",
                                         "optimizer.lr=1e-30", "schedule.warmup_steps=0"}), false);
    return losses(dir / name / "metrics.jsonl").at(0);
  };
  const double token = run("token", "token"), sequence = run("sequence", "sequence");
  CHECK(std::isfinite(sequence));
  CHECK(sequence != token);
  CHECK(std::abs(sequence - token) < 0.5 * token);  // the same model: the same scale of loss
}

namespace {

std::vector<float> adapter_weights(const fs::path& checkpoint) {
  const SafetensorsReader r(checkpoint / "adapter_model.safetensors");
  std::vector<float> all;
  for (const TensorInfo& t : r.tensors()) {
    const std::vector<float> v = r.read_f32(t.name);
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

// The config of a run on a frozen base: the base trained 2 steps from base_config(dir, data) into
// dir/base, then the same config with model.path its checkpoint (the LoRA block appended by the caller).
std::string on_trained_base(const fs::path& dir, const fs::path& data) {
  const std::string cfg = base_config(dir, data);
  const fs::path base = train(TrainConfig::parse(cfg, "base", {"out_dir=" + (dir / "base").string(), "max_steps=2"}),
                              false).last_checkpoint;
  std::string on_base = cfg;
  const size_t from = on_base.find("model:\n"), to = on_base.find("data:\n");
  on_base.replace(from, to - from, "model:\n  path: " + base.string() + "\n");
  return on_base;
}

}  // namespace

TEST_CASE("LoRA with adapter dropout: resume is bitwise, the dropout changes training, PEFT's config records it",
          "[trainer][lora]") {
  const fs::path dir = temp_dir("lora-dropout");
  const std::string lora = on_trained_base(dir, write_data(dir)) + "lora: {r: 4, alpha: 8, dropout: 0.2, targets: [q_proj, o_proj, up_proj]}\n";
  const std::vector<std::string> common = {"optimizer.lr=5.0e-2", "max_steps=4"};
  auto set = [&](const std::string& out, std::vector<std::string> more = {}) {
    more.insert(more.begin(), common.begin(), common.end());
    more.push_back("out_dir=" + (dir / out).string());
    return more;
  };
  const auto straight = train(TrainConfig::parse(lora, "a", set("a")), false);
  const TrainConfig c = TrainConfig::parse(lora, "b", set("b", {"save_every=2", "keep_last=5"}));
  train(c, false);
  fs::remove_all(dir / "b/checkpoints" / checkpoint_name(4));
  train(c, true);
  CHECK(losses(dir / "a/metrics.jsonl") == losses(dir / "b/metrics.jsonl"));  // bitwise
  CHECK(adapter_weights(straight.last_checkpoint) == adapter_weights(dir / "b/checkpoints" / checkpoint_name(4)));
  const auto peft = nlohmann::json::parse(std::ifstream(straight.last_checkpoint / "adapter_config.json"));
  CHECK(peft["lora_dropout"] == Approx(0.2));
  // Without the dropout the same run trains to other adapters.
  std::string no_dropout = lora;
  no_dropout.replace(no_dropout.find("dropout: 0.2, "), 14, "");
  const auto clean = train(TrainConfig::parse(no_dropout, "clean", set("clean")), false);
  CHECK(losses(dir / "clean/metrics.jsonl") != losses(dir / "a/metrics.jsonl"));
  CHECK(adapter_weights(clean.last_checkpoint) != adapter_weights(straight.last_checkpoint));
}

TEST_CASE("LoRA runs: PEFT checkpoints without the base, bitwise resume, the base untouched, export --merge",
          "[trainer][lora]") {
  const fs::path dir = temp_dir("lora-run");
  const fs::path data = write_data(dir);
  const std::string cfg = base_config(dir, data);
  // The same run on the trained model as a frozen base.
  const std::string on_base = on_trained_base(dir, data);
  const fs::path base = dir / "base/checkpoints" / checkpoint_name(2);
  const std::string lora = on_base + "lora: {r: 4, alpha: 8, targets: [q_proj, v_proj, down_proj]}\n";
  const std::vector<std::string> common = {"optimizer.lr=5.0e-2"};
  auto set = [&](std::vector<std::string> more) {
    more.insert(more.begin(), common.begin(), common.end());
    return more;
  };
  CHECK_THROWS_WITH(TrainConfig::parse(cfg + "lora: {r: 4, targets: [q_proj]}\n", "x.yaml"),
                    Catch::Contains("'lora' needs model.path"));
  CHECK_THROWS_WITH(train(TrainConfig::parse(on_base + "lora: {r: 4, targets: [c_attn]}\n", "x.yaml",
                                             set({"out_dir=" + (dir / "x").string()})),
                          false),
                    Catch::Contains("'c_attn' is not a LoRA target of llama; the valid names are q_proj"));

  const auto straight = train(TrainConfig::parse(lora, "a", set({"out_dir=" + (dir / "a").string(), "max_steps=6"})),
                              false);
  const TrainConfig c = TrainConfig::parse(
      lora, "b", set({"out_dir=" + (dir / "b").string(), "max_steps=6", "save_every=3", "keep_last=5"}));
  train(c, false);
  fs::remove_all(dir / "b/checkpoints" / checkpoint_name(6));
  train(c, true);
  const std::vector<double> la = losses(dir / "a/metrics.jsonl");
  CHECK(la == losses(dir / "b/metrics.jsonl"));  // bitwise
  REQUIRE(la.size() == 6);  // (the loss falling under LoRA is checked on a fixed batch in test_lora.cpp)
  const fs::path ck = straight.last_checkpoint;
  CHECK(adapter_weights(ck) == adapter_weights(dir / "b/checkpoints" / checkpoint_name(6)));
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors", "optimizer.safetensors",
                        "trainer_state.json", "config.yaml", "tokenizer.model"})
    CHECK(fs::exists(ck / f));
  CHECK_FALSE(fs::exists(ck / "model.safetensors"));  // no copy of the base
  const SafetensorsReader r(ck / "adapter_model.safetensors");
  CHECK(r.tensors().size() == 6);
  CHECK(r.at("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight").shape == std::vector<int64_t>{16, 4});
  const std::vector<float> b = r.read_f32("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight");
  CHECK(std::any_of(b.begin(), b.end(), [](float x) { return x != 0.0f; }));  // B left its zero init: trained
  CHECK(SafetensorsReader(ck / "optimizer.safetensors").at("adamw.m").shape[0] < 1000);  // the adapters' moments only
  const auto peft = nlohmann::json::parse(std::ifstream(ck / "adapter_config.json"));
  CHECK(peft["peft_type"] == "LORA");
  CHECK(peft["r"] == 4);
  CHECK(peft["base_model_name_or_path"] == fs::absolute(base).string());
  verify_checkpoint(base);  // the base's files are bitwise those it was written with

  // The run opens as base + adapter; its merged export gives the same logits.
  CpuModel<float> run = load_model(dir / "a");
  const std::string ift = IFT_BINARY;
  const std::string cmd = ift + " export --model " + (dir / "a").string() + " --merge --out " +
                          (dir / "merged").string() + " > /dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  CpuModel<float> merged = load_model(dir / "merged");
  CHECK(merged.layout().adapters.empty());
  const std::vector<int32_t> tokens = {1, 450, 4996, 17354, 1701, 3732}, targets = {450, 4996, 17354, 1701, 3732, -1};
  const std::vector<int32_t> positions = {0, 1, 2, 3, 4, 5}, cu = {0, 6};
  const BatchView view{6, tokens, targets, positions, cu};
  const double l1 = run.forward(view, 5.0), l2 = merged.forward(view, 5.0);
  CHECK(l1 == Approx(l2).epsilon(1e-5));
  require_close_to_max("merged logits", merged.logits_to_host(), run.logits_to_host(), 1e-5);
}

TEST_CASE("optimizer.safetensors: the moments of the trainable ranges, and the older 'first' format", "[trainer]") {
  const fs::path dir = temp_dir("optimizer-state");
  fs::create_directories(dir);
  const auto write = [&](const std::vector<float>& m, const std::map<std::string, std::string>& meta) {
    TensorSet t;
    t.add("adamw.m", {int64_t(m.size())}, std::span<const float>(m));
    t.add("adamw.v", {int64_t(m.size())}, std::span<const float>(m));
    write_safetensors(dir / "optimizer.safetensors", t.tensors(), DType::F32, meta);
    return load_optimizer_state(dir);
  };
  const std::vector<float> five = {1, 2, 3, 4, 5};
  const OptimizerState a = write(five, {{"steps", "7"}, {"ranges", "0:2,10:13"}});
  CHECK(a.steps == 7);
  REQUIRE(a.packed.ranges.size() == 2);
  CHECK(a.packed.at(11, 13) == 3);
  CHECK(a.m == five);
  CHECK_THROWS_WITH(a.packed.at(1, 3), Catch::Contains("no moments for parameters [1, 3)"));
  // Written before the ranges: a LoRA checkpoint's moments started at flat element `first`.
  const OptimizerState b = write(five, {{"steps", "1"}, {"first", "100"}});
  REQUIRE(b.packed.ranges.size() == 1);
  CHECK(b.packed.ranges[0].begin == 100);
  CHECK(b.packed.ranges[0].end == 105);
  CHECK(write(five, {{"steps", "1"}}).packed.at(0, 5) == 0);
  CHECK_THROWS_WITH(write(five, {{"steps", "1"}, {"ranges", "0:4"}}),
                    Catch::Contains("hold 5 and 5 values, the ranges 4"));
  CHECK_THROWS_WITH(write(five, {{"steps", "1"}, {"ranges", "3:8,2:4"}}), Catch::Contains("increasing"));
  CHECK_THROWS_WITH(write(five, {{"steps", "1"}, {"ranges", "0-5"}}), Catch::Contains("is not begin:end"));
  fs::remove_all(dir);
}

TEST_CASE("QLoRA runs: lora.quantize nf4 trains on the NF4 base and resumes bitwise", "[trainer][lora]") {
  const fs::path dir = temp_dir("qlora-run");
  const std::string cfg = base_config(dir, write_data(dir));
  const fs::path base = train(TrainConfig::parse(cfg, "base", {"out_dir=" + (dir / "base").string(), "max_steps=2"}),
                              false).last_checkpoint;
  const std::string qlora = cfg.substr(0, cfg.find("model:\n")) + "model:\n  path: " + base.string() + "\n" +
                            cfg.substr(cfg.find("data:\n")) +
                            "lora: {r: 4, alpha: 8, quantize: nf4, targets: [q_proj, o_proj, up_proj]}\n";
  const auto run = [&](const std::string& name, std::vector<std::string> more) {
    more.insert(more.begin(), {"optimizer.lr=5.0e-2", "out_dir=" + (dir / name).string(), "max_steps=4"});
    return TrainConfig::parse(qlora, name, more);
  };
  CHECK(run("a", {}).lora.quantize == "nf4");
  const fs::path straight = train(run("a", {}), false).last_checkpoint;
  const TrainConfig c = run("b", {"save_every=2", "keep_last=5"});
  train(c, false);
  fs::remove_all(dir / "b/checkpoints" / checkpoint_name(4));
  train(c, true);  // the base quantized again from model.path: the same bits
  const std::vector<double> la = losses(dir / "a/metrics.jsonl");
  REQUIRE(la.size() == 4);
  CHECK(la == losses(dir / "b/metrics.jsonl"));
  CHECK(adapter_weights(straight) == adapter_weights(dir / "b/checkpoints" / checkpoint_name(4)));
  CHECK_FALSE(fs::exists(straight / "model.safetensors"));
  verify_checkpoint(base);
}
