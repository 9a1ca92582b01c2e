// `ift tokenize`: text -> token ids, one JSON array on one line (to compare with other tokenizers
// or debug a template). `ift tokenizer train`: a new sentencepiece model from text files.
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "engine/base/error.h"
#include "tokenizer/sentencepiece.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli.h"
#include "tools/commands.h"

namespace ift::cmd {

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  IFT_CHECK(in, path, ": cannot open");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

int tokenizer_train(Args args) {
  cli::Parser p("ift tokenizer train",
                "Train a sentencepiece model (Llama 2's settings: byte fallback, digits split, whitespace kept,\n"
                "no normalization). Ids: unk 0, bos 1, eos 2, pad 3 with --pad (otherwise no pad).\n"
                "Writes PREFIX.model and PREFIX.vocab.");
  p.repeated("--input", "FILE", "training text, one sentence or document per line");
  p.option("--vocab-size", "N", "vocabulary size, special and byte pieces included", cli::required);
  p.option("--out", "PREFIX", "output prefix: writes PREFIX.model and PREFIX.vocab", cli::required);
  p.option("--model-type", "TYPE", "bpe", "bpe or unigram");
  p.option("--character-coverage", "F", "0.9995", "share of characters covered by pieces (the rest: bytes)");
  p.option("--input-sentence-size", "N", "0", "train on a random sample of N lines (0: all)");
  p.option("--max-sentence-length", "BYTES", "16384", "longer lines are skipped by the trainer");
  p.flag("--pad", "reserve id 3 for a pad token");
  p.repeated("--user-symbol", "PIECE", "a piece never split, e.g. <|im_start|>");
  p.option("--threads", "N", "0", "trainer threads (0: all cores)");
  p.flag("--quiet", "show only the trainer's warnings and errors");
  if (!p.parse(args)) return 0;

  SentencepieceTrainOptions o;
  for (const auto& f : p.all("--input")) o.inputs.emplace_back(f);
  IFT_CHECK(!o.inputs.empty(), "--input FILE is required");
  o.out_prefix = p.str("--out");
  o.vocab_size = static_cast<int>(p.integer("--vocab-size"));
  o.model_type = p.str("--model-type");
  o.character_coverage = p.real("--character-coverage");
  o.input_sentence_size = p.integer("--input-sentence-size");
  o.max_sentence_length = static_cast<int>(p.integer("--max-sentence-length"));
  o.with_pad = p.on("--pad");
  o.user_defined_symbols = p.all("--user-symbol");
  o.num_threads = static_cast<int>(p.integer("--threads"));
  o.quiet = p.on("--quiet");
  train_sentencepiece(o);
  std::printf("wrote %s.model and %s.vocab\n", o.out_prefix.c_str(), o.out_prefix.c_str());
  return 0;
}

}  // namespace

int tokenize(Args args) {
  cli::Parser p("ift tokenize", "Print the token ids of a text as a JSON array on one line.");
  p.option("--tokenizer", "PATH", "tokenizer .model, tokenizer.json, vocab.json, or a directory", cli::required);
  p.option("--file", "FILE", "", "read the text from FILE (bytes as they are) instead of the argument");
  p.flag("--bos", "prepend the BOS id");
  p.flag("--eos", "append the EOS id");
  p.flag("--parse-special", "turn special tokens written in the text (<|endoftext|>, </s>) into their ids");
  p.positional("TEXT", "the text to tokenize (or use --file)", 0, 1);
  if (!p.parse(args)) return 0;

  const bool from_file = p.given("--file");
  IFT_CHECK(from_file != (p.positionals().size() == 1), "give either TEXT or --file FILE, not both");
  const std::string text = from_file ? read_file(p.str("--file")) : p.positionals()[0];
  const auto tok = load_tokenizer(p.str("--tokenizer"));

  std::vector<int32_t> ids;
  if (p.on("--bos")) {
    IFT_CHECK(tok->bos_id() >= 0, p.str("--tokenizer"), ": this tokenizer has no BOS token");
    ids.push_back(tok->bos_id());
  }
  const auto body = tok->encode(text, p.on("--parse-special"));
  ids.insert(ids.end(), body.begin(), body.end());
  if (p.on("--eos")) {
    IFT_CHECK(tok->eos_id() >= 0, p.str("--tokenizer"), ": this tokenizer has no EOS token");
    ids.push_back(tok->eos_id());
  }
  std::string line = "[";
  for (size_t i = 0; i < ids.size(); ++i) line += (i ? ", " : "") + std::to_string(ids[i]);
  line += "]\n";
  std::fputs(line.c_str(), stdout);
  return 0;
}

int tokenizer(Args args) {
  if (!args.empty() && std::string(args[0]) == "train") return tokenizer_train(args.subspan(1));
  const bool help = !args.empty() && (std::string(args[0]) == "--help" || std::string(args[0]) == "-h");
  std::fputs("usage: ift tokenizer train [options]   (ift tokenizer train --help)\n", help ? stdout : stderr);
  return help ? 0 : 2;
}

}  // namespace ift::cmd
