// `ift`: the one command-line program. Dispatches to the subcommands in tools/cmd_*.cpp.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string_view>

#include "engine/base/error.h"
#include "tools/commands.h"

namespace {

struct Command {
  const char* name;
  int (*run)(ift::cmd::Args);
  const char* summary;
};

constexpr Command kCommands[] = {
    {"train", ift::cmd::train, "train or fine-tune a model from a YAML config; --resume continues a run"},
    {"generate", ift::cmd::generate, "answer a prompt with a model (KV-cache decoding, greedy or sampled)"},
    {"eval", ift::cmd::eval, "loss on prepared data, or exact match on instruction tasks"},
    {"report", ift::cmd::report, "write RUN_DIR/report.html: curves, task scores, samples, config"},
    {"chat", ift::cmd::chat, "talk with a model, turn after turn"},
    {"bench", ift::cmd::bench, "`ift bench train`: training steps, tokens/s, MFU; `ift bench kernels`: GPU kernel times"},
    {"export", ift::cmd::export_model, "write a LoRA run as a merged Hugging Face model directory (--merge)"},
    {"dump", ift::cmd::dump, "run one batch through a model; write loss, logits and all gradients"},
    {"info", ift::cmd::info, "the memory plan of a model for a batch shape, part by part, on a backend"},
    {"inspect", ift::cmd::inspect, "show prepared rows: JSON (HF labels, positions, sample lengths) or marked text"},
    {"tokenize", ift::cmd::tokenize, "print the token ids of a text as a JSON array"},
    {"tokenizer", ift::cmd::tokenizer, "tokenizer tools: `ift tokenizer train` trains a sentencepiece model"},
    {"synth", ift::cmd::synth, "write the synthetic instruction tasks of the demo (held-out phrasings for eval)"},
    {"prepare", ift::cmd::prepare, "tokenize instruction data with a chat template and pack it for training"},
};

void print_usage(std::FILE* out) {
  std::fprintf(out,
               "ift: instruction fine-tuning of transformer language models\n\n"
               "usage: ift <command> [options]   (ift <command> --help for its options)\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(stdout);
    return 0;
  }
  for (const Command& c : kCommands) {
    if (name != c.name) continue;
    try {
      return c.run(ift::cmd::Args(argv + 2, argv + argc));
    } catch (const ift::Error& e) {
      std::fprintf(stderr, "ift %s: error: %s\n", c.name, e.what());
      return 1;
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ift %s: unexpected error: %s\n", c.name, e.what());
      return 1;
    }
  }
  std::fprintf(stderr, "ift: unknown command '%s'\n\n", argv[1]);
  print_usage(stderr);
  return 2;
}
