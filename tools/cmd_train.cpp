// `ift train CONFIG.yaml`: see engine/train/train_config.h for the fields and engine/train/trainer.h for the loop.
#include <csignal>
#include <cstdio>

#include "engine/train/train_config.h"
#include "engine/train/trainer.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace ift::cmd {

namespace {
std::atomic<bool> g_stop{false};
extern "C" void on_sigint(int) {
  if (g_stop.exchange(true)) std::_Exit(130);  // a second Ctrl-C does not wait for the step
}
}  // namespace

int train(Args args) {
  cli::Parser p("ift train", "Train or fine-tune a model as CONFIG.yaml says (fields: docs/training.md).\n"
                             "Ctrl-C finishes the current step, saves a checkpoint and exits; --resume continues.");
  p.positional("CONFIG.yaml", "the training configuration", 1, 1);
  p.repeated("--set", "KEY=VALUE", "override a config field, e.g. --set optimizer.lr=1e-4 --set max_steps=100");
  p.flag("--resume", "continue from the newest checkpoint in out_dir/checkpoints");
  if (!p.parse(args)) return 0;
  const TrainConfig config = TrainConfig::load(p.positionals()[0], p.all("--set"));
  std::signal(SIGINT, on_sigint);
  const TrainSummary s = ift::train(config, p.on("--resume"), &g_stop);
  std::signal(SIGINT, SIG_DFL);
  std::printf("%s after %lld steps: loss %.4f", s.interrupted ? "interrupted" : "done",
              static_cast<long long>(s.steps), s.last_loss);
  if (s.last_eval_loss >= 0) std::printf(", eval loss %.4f", s.last_eval_loss);
  if (s.skipped_steps) std::printf(", %lld non-finite steps skipped", static_cast<long long>(s.skipped_steps));
  std::printf("\ncheckpoint: %s\n", s.last_checkpoint.c_str());
  return s.interrupted ? 130 : 0;
}

}  // namespace ift::cmd
