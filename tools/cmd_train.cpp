// `ift train CONFIG.yaml`: see engine/train/train_config.h for the fields and engine/train/trainer.h for the loop.
#include <atomic>
#include <csignal>
#include <cstdio>

#include "engine/dist/comm.h"
#include "engine/train/train_config.h"
#include "engine/train/trainer.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace ift::cmd {

namespace {
// Exit status of a run stopped by a signal after writing its checkpoint: EX_TEMPFAIL (sysexits.h),
// "try again later", which a requeue script can tell from success (0) and failure (1).
constexpr int kInterrupted = 75;
std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int sig) {
  // A second signal does not wait for the step; the previous checkpoint stays intact (atomic writes).
  if (g_stop.exchange(true)) std::_Exit(128 + sig);
}
}  // namespace

int train(Args args) {
  cli::Parser p("ift train", "Train or fine-tune a model as CONFIG.yaml says (fields: docs/training.md).\n"
                             "Ctrl-C, SIGTERM or SIGUSR1 finish the current step, save a checkpoint and exit with\n"
                             "status 75; --resume continues (and starts afresh when there is no checkpoint yet).");
  p.positional("CONFIG.yaml", "the training configuration", 1, 1);
  p.repeated("--set", "KEY=VALUE", "override a config field, e.g. --set optimizer.lr=1e-4 --set max_steps=100");
  p.flag("--resume", "continue from the newest checkpoint in out_dir/checkpoints (none yet: start)");
  p.flag("--resume-anyway", "resume although the config differs from the checkpoint's in fields that change the result");
  if (!p.parse(args)) return 0;
  TrainConfig config = TrainConfig::load(p.positionals()[0], p.all("--set"));
  config.resume_anyway = p.on("--resume-anyway");
  for (int sig : {SIGINT, SIGTERM, SIGUSR1}) std::signal(sig, on_stop_signal);
  TrainSummary s;
  try {
    s = ift::train(config, p.on("--resume") || p.on("--resume-anyway"), &g_stop);
  } catch (const std::exception& e) {
    // One rank's error must end the job: its peers would wait in the next collective.
    dist::Communicator* comm = dist::existing_communicator();
    if (!comm || comm->world() == 1) throw;
    std::fprintf(stderr, "ift train: rank %d of %d: error: %s\n", comm->rank(), comm->world(), e.what());
    comm->abort(1);
  }
  for (int sig : {SIGINT, SIGTERM, SIGUSR1}) std::signal(sig, SIG_DFL);
  const dist::Communicator* comm = dist::existing_communicator();
  if (comm && comm->rank() != 0) return s.interrupted ? kInterrupted : 0;  // rank 0 reports
  std::printf("%s after %lld steps: loss %.4f", s.interrupted ? "interrupted" : "done",
              static_cast<long long>(s.steps), s.last_loss);
  if (s.last_eval_loss >= 0) std::printf(", eval loss %.4f", s.last_eval_loss);
  if (s.skipped_steps) std::printf(", %lld non-finite steps skipped", static_cast<long long>(s.skipped_steps));
  std::printf("\ncheckpoint: %s\n", s.last_checkpoint.c_str());
  return s.interrupted ? kInterrupted : 0;
}

}  // namespace ift::cmd
