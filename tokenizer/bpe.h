// Byte-level BPE (GPT-2's scheme, also used by Llama 3, Qwen, Mistral-Nemo and most Hugging Face
// tokenizer.json files): text is split by a regex pre-tokenizer, every piece is taken as raw bytes,
// and adjacent symbols are merged by rank, lowest first, starting from one symbol per byte. Because
// every byte has a symbol, any byte string encodes, and decode gives the bytes back.
//
// Use load_tokenizer() (tokenizer.h); these are its byte-level BPE entry points.
#pragma once

#include <filesystem>
#include <memory>
#include <string_view>

#include "tokenizer/tokenizer.h"

namespace ift {

// GPT-2's pre-tokenizer: contractions, optional space + letters, optional space + numbers, optional
// space + other symbols, whitespace not followed by non-space, other whitespace.
inline constexpr std::string_view kGpt2SplitPattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// A Hugging Face tokenizer.json whose model is BPE with a ByteLevel pre-tokenizer (optionally after
// a Split regex, as Llama 3 and Qwen write it). Reads bos/eos/pad/unk from a tokenizer_config.json
// beside it when there is one; otherwise "<|endoftext|>", when present, is bos and eos (GPT-2).
std::unique_ptr<Tokenizer> load_bpe_tokenizer_json(const std::filesystem::path& file);

// GPT-2's original files: vocab.json ({piece: id}) and merges.txt ("a b" per line, ranked by order,
// an optional "#version" first line). "<|endoftext|>" is the special token, bos and eos.
std::unique_ptr<Tokenizer> load_bpe_vocab_merges(const std::filesystem::path& vocab_json,
                                                 const std::filesystem::path& merges_txt);

}  // namespace ift
