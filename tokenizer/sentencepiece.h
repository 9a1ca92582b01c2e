// Sentencepiece models (.model files: Llama 1/2, Mistral 7B, Gemma, T5, TinyLlama...), through
// libsentencepiece, and training new ones with its trainer.
//
// Use load_tokenizer() (tokenizer.h) to load; bos/eos/pad/unk come from the model. Sentencepiece
// prepends its dummy-prefix space ("▁") to the text it encodes, as the reference does. With
// parse_special, control pieces written in the text ("<s>", "</s>") become their ids and the text
// between them is encoded piece by piece (each gets the dummy prefix, as Hugging Face's legacy
// Llama tokenizer does; with tokenizer_config.json "legacy": false beside the model, only the
// segment at the start of the text gets it, as transformers 5 does). With parse_special, a segment
// that starts with a space gets no dummy prefix, as Hugging Face's Metaspace does. Known
// difference from transformers 5 (Hugging Face tokenizers' BPE): runs of several spaces segment
// differently ("a  b": sentencepiece "▁" "▁b", tokenizers "▁▁" "b"); the text is the same. User-defined pieces are ordinary vocabulary to sentencepiece and are
// always matched, with or without parse_special.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace ift {

std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& model_file);

// Options of `ift tokenizer train`. The defaults follow Llama 2's tokenizer: byte fallback (no
// text is ever unknown), digits split one by one, whitespace kept as written, identity
// normalization. Ids: unk 0, bos 1, eos 2, pad 3 when `with_pad` (otherwise none).
struct SentencepieceTrainOptions {
  std::vector<std::filesystem::path> inputs;  // plain text, one sentence (or document) per line
  std::filesystem::path out_prefix;           // writes <prefix>.model and <prefix>.vocab
  int vocab_size = 8000;
  std::string model_type = "bpe";  // bpe or unigram
  double character_coverage = 0.9995;
  int64_t input_sentence_size = 0;  // sample this many lines (0: all)
  int max_sentence_length = 16384;  // bytes; longer lines are skipped by the trainer
  bool with_pad = false;
  std::vector<std::string> user_defined_symbols;  // pieces never split, e.g. "<|im_start|>"
  int num_threads = 0;                           // 0: all cores
  bool quiet = false;                            // only the trainer's warnings and errors on stderr
};

// Trains and writes the model; throws ift::Error naming the input or output on failure.
void train_sentencepiece(const SentencepieceTrainOptions& options);

}  // namespace ift
