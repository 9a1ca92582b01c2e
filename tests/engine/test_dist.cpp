// Data parallelism (engine/dist/): slices, the launcher's environment, and `mpirun -np 2 ift train`
// against one process with the same rows per step: plain, ZeRO-1, a packed masked dataset whose
// ranks see different trained-token counts; resume across world sizes; SIGTERM on one rank; a
// killed rank; a configuration that differs between ranks.
//
// Every mpirun case runs the tiny Llama of the trainer tests (hidden 16, one layer) for at most 30
// steps of one or two 64-token rows, one OpenMP thread per rank, over loopback TCP.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include <sys/wait.h>

#include "data/loader.h"
#include "data/packed_file.h"
#include "engine/base/io.h"
#include "engine/checkpoint.h"
#include "engine/dist/comm.h"
#include "engine/dist/data_parallel.h"
#include "engine/safetensors.h"
#include "tests/engine/train_support.h"
#include "tests/support.h"

using namespace ift;
using namespace ift::test;
namespace fs = std::filesystem;

namespace {

// Alpaca JSONL. uneven: outputs of 1 to 13 words, so rows carry different trained-token counts.
fs::path write_data(const fs::path& dir, bool uneven) {
  const fs::path file = dir / (uneven ? "uneven.jsonl" : "even.jsonl");
  std::ofstream out(file);
  const char* words[] = {"apple", "river", "stone", "cloud", "green", "quick", "seven", "north"};
  for (int i = 0; i < 48; ++i) {
    std::string a = words[i % 8], b = words[(i * 3 + 1) % 8], output = a + " " + b;
    if (uneven)
      for (int k = 0; k < (i * 7) % 12; ++k) output += std::string(" ") + words[(i + k) % 8];
    out << R"({"instruction": "Repeat the words.", "input": ")" << a << " " << b << R"(", "output": ")" << output
        << "\"}\n";
  }
  return file;
}

fs::path write_config(const fs::path& dir, const fs::path& data) {
  const fs::path path = dir / "c.yaml";
  std::ofstream(path) << "seed: 3\nthreads: 1\n"
         "tokenizer: " + fixture("tokenizers/llama2/tokenizer.model").string() + "\n" +
         "model:\n  init: {model_type: llama, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2,\n"
         "         intermediate_size: 32, vocab_size: 32000}\n"
         "data:\n  train: [" + data.string() + "]\n  mask: outputs\n  pack: bfd\n" +
         "seq_len: 64\nmicro_batch: 1\ngrad_accum: 1\nmax_steps: 10\nlog_every: 1\n"
         "optimizer: {lr: 1.0e-2, weight_decay: 0.1}\nschedule: {warmup_steps: 1, decay: cosine}\n";
  return path;
}

const std::string kIft = IFT_BINARY;


// mpirun as this machine runs it: as root if need be, two ranks on however many cores, loopback TCP.
std::string mpirun(int np) {
  return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl=self,tcp "
         "OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo OMPI_MCA_rmaps_base_oversubscribe=1 "
         "OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_mpi_yield_when_idle=1 " IFT_MPIEXEC " -np " +
         std::to_string(np) + " ";
}

// `ift train` with extra arguments, one process or np ranks; returns the exit status.
int train(const fs::path& cfg, const fs::path& out, int np, const std::string& extra, const fs::path& log) {
  const std::string cmd = (np > 1 ? mpirun(np) : std::string()) + kIft + " train " + shell_quote(cfg.string()) +
                          " --set out_dir=" + shell_quote(out.string()) + " " + extra + " > " +
                          shell_quote(log.string()) + " 2>&1";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The straight run and the data-parallel one: the same losses (1e-6 relative) and weights (as the
// trainer's accumulation test: the sums run in another order; AdamW turns a rounding difference
// into up to lr times its relative size where a gradient nearly cancels).
void require_same_training(const fs::path& a, const fs::path& b, size_t steps) {
  const std::vector<double> la = losses(a / "metrics.jsonl"), lb = losses(b / "metrics.jsonl");
  REQUIRE(la.size() == steps);
  require_close("losses", lb, la, 0.0, 1e-6);
  require_close("weights", weights(b / "checkpoints" / checkpoint_name(int64_t(steps))),
                weights(a / "checkpoints" / checkpoint_name(int64_t(steps))), 1e-5, 1e-4);
  int same = 0;
  for (size_t i = 0; i < la.size(); ++i) same += la[i] == lb[i];
  std::printf("%s vs %s: %d of %zu losses bitwise equal\n", b.filename().c_str(), a.filename().c_str(), same, la.size());
}

// The pid of rank `rank` among mpirun's children (by OMPI_COMM_WORLD_RANK in its environment).
const char* kRankPid =
    "rank_pid() { for p in $(pgrep -P $1); do tr '\\0' '\\n' < /proc/$p/environ 2>/dev/null | "
    "grep -qx OMPI_COMM_WORLD_RANK=$2 && echo $p; done; }; ";

std::string wait_for_lines(const fs::path& metrics, int n) {
  return "while [ ! -f " + metrics.string() + " ] || [ $(wc -l < " + metrics.string() + ") -lt " + std::to_string(n) +
         " ]; do sleep 0.05; done; ";
}

}  // namespace

TEST_CASE("slices: every element owned once, boundaries on 64 elements", "[dist]") {
  for (size_t n : {size_t(0), size_t(1), size_t(63), size_t(64), size_t(97), size_t(1025), size_t(100003)}) {
    for (int world = 1; world <= 5; ++world) {
      size_t at = 0;
      for (int r = 0; r < world; ++r) {
        const dist::Slice s = dist::slice_of(n, r, world);
        INFO("n " << n << " world " << world << " rank " << r);
        REQUIRE(s.begin == at);
        REQUIRE(s.end >= s.begin);
        CHECK((s.end % 64 == 0 || s.end == n));
        at = s.end;
      }
      CHECK(at == n);
    }
  }
}

TEST_CASE("the launcher's environment gives rank, world and local rank", "[dist]") {
  struct Env {
    const char* name;
    std::string saved;
    bool had;
  };
  std::vector<Env> env;
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_PROCID",
                        "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_STEP_ID", "RANK", "WORLD_SIZE", "LOCAL_RANK"}) {
    const char* x = std::getenv(v);
    env.push_back({v, x ? x : "", x != nullptr});
    ::unsetenv(v);
  }
  CHECK(dist::detect_launch().kind == dist::Launch::Kind::none);
  CHECK(dist::detect_launch().world == 1);
  ::setenv("RANK", "3", 1), ::setenv("WORLD_SIZE", "8", 1), ::setenv("LOCAL_RANK", "1", 1);
  dist::Launch l = dist::detect_launch();
  CHECK((l.kind == dist::Launch::Kind::torchrun && l.rank == 3 && l.world == 8 && l.local_rank == 1));
  ::setenv("SLURM_PROCID", "9", 1), ::setenv("SLURM_NTASKS", "16", 1), ::setenv("SLURM_LOCALID", "1", 1);
  CHECK(dist::detect_launch().kind == dist::Launch::Kind::torchrun);  // an sbatch shell is no srun step
  ::setenv("SLURM_STEP_ID", "0", 1);
  l = dist::detect_launch();
  CHECK((l.kind == dist::Launch::Kind::srun && l.rank == 9 && l.world == 16 && l.local_rank == 1));
  ::setenv("OMPI_COMM_WORLD_RANK", "1", 1), ::setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  ::setenv("OMPI_COMM_WORLD_LOCAL_RANK", "0", 1);
  l = dist::detect_launch();
  CHECK((l.kind == dist::Launch::Kind::mpirun && l.rank == 1 && l.world == 2 && l.local_rank == 0));
  ::setenv("OMPI_COMM_WORLD_RANK", "2", 1);
  CHECK_THROWS_WITH(dist::detect_launch(), Catch::Contains("rank 2") && Catch::Contains("world size 2"));
  ::setenv("OMPI_COMM_WORLD_RANK", "x", 1);
  CHECK_THROWS_WITH(dist::detect_launch(), Catch::Contains("OMPI_COMM_WORLD_RANK"));
  for (const Env& e : env) {
    if (e.had) ::setenv(e.name, e.saved.c_str(), 1);
    else ::unsetenv(e.name);
  }
}

TEST_CASE("mpirun -np 2 trains as one process with grad_accum 2: plain, ZeRO-1, uneven trained tokens", "[mpi]") {
  const fs::path dir = temp_dir("dist-equal");
  for (const bool uneven : {false, true}) {
    const fs::path data = write_data(dir, uneven);
    const fs::path cfg = write_config(dir, data);
    const std::string tag = uneven ? "uneven-" : "even-";
    REQUIRE(train(cfg, dir / (tag + "np1"), 1, "--set grad_accum=2", dir / "np1.log") == 0);
    REQUIRE(train(cfg, dir / (tag + "np2"), 2, "", dir / "np2.log") == 0);
    INFO(read_text(dir / "np2.log"));
    require_same_training(dir / (tag + "np1"), dir / (tag + "np2"), 10);
    if (!uneven) {
      REQUIRE(train(cfg, dir / (tag + "zero"), 2, "--set distributed.zero=1", dir / "zero.log") == 0);
      INFO(read_text(dir / "zero.log"));
      require_same_training(dir / (tag + "np1"), dir / (tag + "zero"), 10);
      // ZeRO-1 with fp32 master weights sliced (emu, bf16): 3 steps, against one process.
      const std::string emu = "--set backend=emu --set precision=bf16 --set max_steps=3 ";
      REQUIRE(train(cfg, dir / "emu-np1", 1, emu + "--set grad_accum=2", dir / "emu1.log") == 0);
      REQUIRE(train(cfg, dir / "emu-zero", 2, emu + "--set distributed.zero=1", dir / "emuz.log") == 0);
      INFO(read_text(dir / "emuz.log"));
      require_same_training(dir / "emu-np1", dir / "emu-zero", 3);
      const auto j = nlohmann::json::parse(read_text(dir / (tag + "np2") / "metrics.jsonl").substr(0, read_text(dir / (tag + "np2") / "metrics.jsonl").find('\n')));
      CHECK(j.at("comm_bytes_per_step").get<int64_t>() > 0);
      continue;
    }
    // The uneven data does give the two ranks different trained-token counts in some steps.
    fs::path pack;
    for (const auto& e : fs::directory_iterator(dir / (tag + "np2") / "data")) pack = e.path() / "train.pack";
    const PackedFile file(pack);
    Loader r0(file, 1, 3, 0, 2), r1(file, 1, 3, 1, 2);
    int differ = 0;
    for (int s = 0; s < 10; ++s) differ += r0.next().trained_tokens() != r1.next().trained_tokens();
    CHECK(differ >= 5);
  }
}

TEST_CASE("resume across world sizes: np=2 -> np=1, np=1 -> np=2", "[mpi]") {
  const fs::path dir = temp_dir("dist-resume");
  const fs::path cfg = write_config(dir, write_data(dir, true));
  const std::string save = " --set save_every=5 --set keep_last=5";
  // The straight runs, with checkpoints at 5 and 10; drop step 10 and resume from 5 in the other world.
  REQUIRE(train(cfg, dir / "np2", 2, save, dir / "a.log") == 0);
  REQUIRE(train(cfg, dir / "np1", 1, "--set grad_accum=2" + save, dir / "b.log") == 0);
  for (const char* run : {"np2", "np1"}) {
    fs::copy(dir / run, dir / (std::string(run) + "-resumed"), fs::copy_options::recursive);
    fs::remove_all(dir / (std::string(run) + "-resumed") / "checkpoints" / checkpoint_name(10));
  }
  REQUIRE(train(cfg, dir / "np2-resumed", 1, "--resume --set grad_accum=2" + save, dir / "c.log") == 0);
  INFO(read_text(dir / "c.log"));
  CHECK(read_text(dir / "c.log").find("saved with 2 rank(s)") != std::string::npos);
  require_same_training(dir / "np2", dir / "np2-resumed", 10);
  REQUIRE(train(cfg, dir / "np1-resumed", 2, "--resume" + save, dir / "d.log") == 0);
  INFO(read_text(dir / "d.log"));
  require_same_training(dir / "np1", dir / "np1-resumed", 10);
  // Another rows-per-step is a changed config, named.
  REQUIRE(train(cfg, dir / "np1-resumed", 2, "--resume --set max_steps=12 --set grad_accum=2", dir / "e.log") == 1);
  CHECK(read_text(dir / "e.log").find("grad_accum") != std::string::npos);
}

TEST_CASE("SIGTERM on one rank stops both at the same step, and np=2 resumes bitwise", "[mpi]") {
  const fs::path dir = temp_dir("dist-sigterm");
  const fs::path cfg = write_config(dir, write_data(dir, true));
  const std::string steps = " --set max_steps=30";
  REQUIRE(train(cfg, dir / "straight", 2, steps, dir / "a.log") == 0);
  const std::string run = mpirun(2) + kIft + " train " + cfg.string() + " --resume --set out_dir=" + (dir / "b").string() + steps;
  const std::string script = std::string(kRankPid) + "(" + run + " > " + (dir / "b.log").string() + " 2>&1) & mp=$!; " +
                             wait_for_lines(dir / "b/metrics.jsonl", 3) + "kill -TERM $(rank_pid $mp 1); wait $mp; exit $?";
  const int status = std::system(("bash -c " + shell_quote(script)).c_str());
  INFO(read_text(dir / "b.log"));
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 75);  // both ranks exit 75 after rank 0's checkpoint
  REQUIRE(!list_checkpoints(dir / "b/checkpoints").empty());
  const int64_t stopped = load_trainer_state(list_checkpoints(dir / "b/checkpoints").back()).at("step").get<int64_t>();
  CHECK(stopped < 30);
  REQUIRE(train(cfg, dir / "b", 2, "--resume" + steps, dir / "c.log") == 0);
  CHECK(losses(dir / "straight/metrics.jsonl").size() == 30);
  CHECK(losses(dir / "straight/metrics.jsonl") == losses(dir / "b/metrics.jsonl"));  // bitwise: == on doubles
  CHECK(weights(dir / "straight/checkpoints" / checkpoint_name(30)) == weights(dir / "b/checkpoints" / checkpoint_name(30)));
}

TEST_CASE("a killed rank ends the job within 60 s naming the rank, and a config that differs between ranks is refused", "[mpi]") {
  const fs::path dir = temp_dir("dist-fault");
  const fs::path cfg = write_config(dir, write_data(dir, false));
  const std::string run = mpirun(2) + kIft + " train " + cfg.string() + " --set out_dir=" + (dir / "k").string() +
                          " --set max_steps=1000000 --set distributed.timeout_s=30";
  const std::string script = std::string(kRankPid) + "(" + run + " > " + (dir / "k.log").string() + " 2>&1) & mp=$!; " +
                             wait_for_lines(dir / "k/metrics.jsonl", 3) + "kill -KILL $(rank_pid $mp 1); " +
                             "t0=$(date +%s); wait $mp; rc=$?; echo $(( $(date +%s) - t0 )) > " +
                             (dir / "k.secs").string() + "; exit $rc";
  const int status = std::system(("bash -c " + shell_quote(script)).c_str());
  const std::string log = read_text(dir / "k.log");
  INFO(log);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) != 0);
  CHECK(std::stoi(read_text(dir / "k.secs")) < 60);
  CHECK(log.find("rank 1") != std::string::npos);

  // MPMD: rank 1 gets another seed.
  const std::string mismatch = mpirun(1) + kIft + " train " + cfg.string() + " --set out_dir=" + (dir / "m").string() +
                               " : -np 1 " + kIft + " train " + cfg.string() + " --set out_dir=" + (dir / "m").string() +
                               " --set seed=4 > " + (dir / "m.log").string() + " 2>&1";
  const int st = std::system(mismatch.c_str());
  const std::string mlog = read_text(dir / "m.log");
  INFO(mlog);
  CHECK((WIFEXITED(st) && WEXITSTATUS(st) != 0));
  CHECK(mlog.find("differs between rank 0 and rank 1") != std::string::npos);
}

TEST_CASE("ZeRO-1's per-rank plan: master weights and moments cut to the largest slice", "[dist]") {
  std::vector<GroupLayout> groups(2);
  groups[0].size = 1000, groups[0].trainable = true;
  groups[1].size = 500, groups[1].trainable = false;  // frozen: no master, no moments, nothing sent
  MemoryBytes whole;
  whole[MemoryPart::params] = 1500 * 2, whole[MemoryPart::grads] = 1000 * 4;
  whole[MemoryPart::master] = 1000 * 4, whole[MemoryPart::optimizer] = 1000 * 8;
  // 1000 over 4 ranks: 256, 256, 256, 232.
  const MemoryBytes one = dist::plan_per_rank(whole, groups, 4, 1);
  CHECK(one[MemoryPart::master] == 256 * 4);
  CHECK(one[MemoryPart::optimizer] == 256 * 8);
  CHECK(one[MemoryPart::params] == whole[MemoryPart::params]);
  CHECK(one[MemoryPart::grads] == whole[MemoryPart::grads]);
  CHECK(dist::plan_per_rank(whole, groups, 4, 0).bytes == whole.bytes);
  // 750 trainable elements leave each rank: gradients twice (fp32), or gradients and bf16 parameters.
  CHECK(dist::bytes_per_step(groups, 4, 0, 2) == 750 * 8);
  CHECK(dist::bytes_per_step(groups, 4, 1, 2) == 750 * 6);
  CHECK(dist::bytes_per_step(groups, 1, 0, 4) == 0);
}

// The NCCL communicator, where there are two GPUs (NCCL refuses two ranks on one device): mpirun
// -np 2 on the cuda backend against one process with grad_accum 2. Elsewhere it says why it did
// not run and passes; it has not run yet (no GPU where it was written).
TEST_CASE("mpirun -np 2 on the cuda backend (NCCL) trains as one process with grad_accum 2", "[mpi]") {
#if IFT_HAVE_CUDA
  const int gpus = std::system("test $(nvidia-smi -L 2>/dev/null | grep -c '^GPU') -ge 2") == 0 ? 2 : 0;
  if (gpus < 2) {
    WARN("fewer than two GPUs: the NCCL case did not run");
    return;
  }
  const fs::path dir = temp_dir("dist-nccl");
  const fs::path cfg = write_config(dir, write_data(dir, true));
  REQUIRE(train(cfg, dir / "np1", 1, "--set backend=cuda --set grad_accum=2", dir / "a.log") == 0);
  REQUIRE(train(cfg, dir / "np2", 2, "--set backend=cuda", dir / "b.log") == 0);
  INFO(read_text(dir / "b.log"));
  require_same_training(dir / "np1", dir / "np2", 10);
  REQUIRE(train(cfg, dir / "zero", 2, "--set backend=cuda --set precision=bf16 --set distributed.zero=1", dir / "c.log") == 0);
  CHECK(losses(dir / "zero/metrics.jsonl").size() == 10);
#else
  WARN("a build without CUDA: the NCCL case did not run");
#endif
}
