// Chat templates: how a Conversation becomes token ids and a loss mask.
//
// A template is a handful of strings put around each role. It is applied piece by piece: every
// piece (template text, user text, assistant text, special token) is tagged trained or not as it
// is emitted, so the loss mask is exact by construction, never found by searching the text.
// Consecutive text pieces with the same tag are joined and encoded together (parse_special=false,
// so user text can never forge a special token); special tokens are inserted by id. Pieces are
// therefore tokenized separately only where the tag changes or at a special token; a sentencepiece
// tokenizer with a dummy prefix starts each such run with "▁".
//
// In template strings, "{bos}", "{eos}" and every entry of `special_tokens` stand for one token id:
// bos_id (skipped when the tokenizer has none, or when it equals eos_id as in GPT-2, matching
// Hugging Face), eos_id (an error naming the tokenizer when it has none; not repeated right after
// a token that already is EOS, e.g. chatml's <|im_end|> on Qwen), special_id(name) (an error when
// the tokenizer lacks it).
//
// Rendering of one conversation (system = the sample's, or the default when it has none):
//   bos
//   system_prefix + system + system_suffix          (here, unless system_in_first_user; skipped if system is "")
//   per user turn:      user_prefix [+ system block, first turn, if system_in_first_user] + text
//                       [+ input_prefix + input, when the turn has an Alpaca input] + user_suffix
//   per assistant turn: assistant_prefix, then text + assistant_suffix (TRAINED),
//                       then turn_separator unless it is the last turn
//
// A Jinja template (a model's own chat_template, `template: auto`, or a FILE.jinja) is used the way
// transformers' apply_chat_template uses it: the whole conversation is rendered to one string
// (data/jinja.h) and that string is tokenised in one call with special tokens recognised (so, as in
// transformers, text in a message that spells a special token becomes that token). Its loss mask
// comes from byte spans of the rendered text, mapped to tokens through the tokenizer's offsets (a
// token is trained when its bytes overlap a span):
//   - with {% generation %} blocks: the blocks' output, as return_assistant_tokens_mask takes it;
//   - otherwise by rendering prefixes: assistant turn k starts where the rendering of the messages
//     before it with add_generation_prompt ends, and ends where the rendering through it stops
//     agreeing with the whole; trailing whitespace after its end-of-turn text is not trained
//     (the "\n" after <|im_end|> separates turns, generation stops before it). A template whose
//     renderings are not prefixes of one another, or whose span for a turn does not hold the
//     turn's text, is an error naming the record: never a silently wrong mask.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/conversation.h"
#include "data/jinja.h"
#include "tokenizer/tokenizer.h"

namespace ift {

struct Template {
  std::string name;
  std::string bos;                        // start of every sample, e.g. "{bos}"
  std::string default_system;             // system text when the sample has none ("" = no system block)
  std::string default_system_with_input;  // alpaca: the default when the first user turn has an input
  std::string system_prefix, system_suffix;
  bool system_in_first_user = false;      // llama2: the <<SYS>> block goes inside the first [INST]
  std::string user_prefix, user_suffix;
  std::string input_prefix = "\n\n";      // before an Alpaca input inside the user turn
  std::string assistant_prefix;           // not trained
  std::string assistant_suffix = "{eos}"; // trained: the model must learn to end its turn
  std::string turn_separator;             // not trained, between an assistant turn and the next user turn
  std::vector<std::string> special_tokens;  // pieces in the strings above that are single special tokens

  // A Jinja chat template instead of the strings above ("" for none).
  std::string jinja;
  std::string bos_token, eos_token;  // its bos_token/eos_token; "" = the tokenizer's BOS/EOS pieces
  bool auto_detect = false;          // "auto": resolved by resolve_template against the tokenizer
};

// "alpaca", "chatml", "llama2", "plain"; throws for any other name.
Template builtin_template(std::string_view name);
std::vector<std::string> builtin_template_names();
// A custom template from YAML: the keys are the field names of Template (all optional except none;
// unknown keys are an error, so a typo cannot be silently ignored).
Template template_from_yaml(std::string_view yaml_text, const std::string& name);
Template load_template_file(const std::filesystem::path& path);
// A Jinja template from a file (the file's text is the template).
Template load_jinja_template_file(const std::filesystem::path& path);
// "auto", a built-in name, a path ending in .jinja, or one ending in .yaml/.yml.
Template find_template(const std::string& name_or_path);
// The chat template of a model or tokenizer directory: tokenizer_config.json's "chat_template" (a
// string, or the entry named "default" of a list), else a chat_template.jinja file beside it, with
// bos_token/eos_token from tokenizer_config.json. nullopt when there is none.
std::optional<Template> model_chat_template(const std::filesystem::path& dir);
// "auto" becomes the chat template found beside the tokenizer's files (model_chat_template), or the
// built-in alpaca when there is none (its name then says so); any other template is returned as is.
Template resolve_template(const Template& t, const Tokenizer& tokenizer);

enum class MaskMode {
  outputs,  // every assistant turn (text + end of turn) trained, prompts not
  all,      // every token trained (except the first of a sample, which has no predecessor)
  last,     // only the last assistant turn trained
};
MaskMode parse_mask_mode(std::string_view name);
const char* mask_mode_name(MaskMode m);

// Which trained assistant turns keep their end of turn (the template's suffix/EOS, or a Jinja
// template's end-of-turn text) in the loss. `all` (default) teaches the model to stop after every
// turn; `last` only after the final one; `none` never (the model then does not learn to stop).
// Applies to the turns `MaskMode` trains; MaskMode::all trains everything regardless.
enum class EosMode { all, last, none };
EosMode parse_eos_mode(std::string_view name);
const char* eos_mode_name(EosMode m);

// One tokenized example. trained[i] says whether tokens[i] is a training target, i.e. the loss
// counts predicting tokens[i] from tokens[..i).
struct Sample {
  std::vector<int32_t> tokens;   // (L)
  std::vector<uint8_t> trained;  // (L) 1 = target
};

// A template bound to a tokenizer: special pieces resolved to ids once.
class ChatFormatter {
 public:
  // Throws ift::Error naming the tokenizer if a special token the template needs is missing.
  ChatFormatter(const Template& tmpl, const Tokenizer& tokenizer);
  // Throws ift::Error naming c.where when a Jinja template raises or its mask cannot be found.
  Sample render(const Conversation& c, MaskMode mask, EosMode eos = EosMode::all) const;
  // The prompt for generation: a conversation ending with a user turn, rendered through the
  // assistant prefix exactly as training renders it, so the model continues where it learned to.
  Sample render_prompt(const Conversation& c) const;
  const Template& tmpl() const { return tmpl_; }  // resolved: never "auto"

  // A Jinja template's rendering of `c`: the text and the byte spans trained under `mask` (what
  // render() tokenises; exposed for tests and `ift inspect`). Throws for a string template.
  struct Rendering {
    std::string text;
    std::vector<std::pair<size_t, size_t>> spans;
  };
  Rendering render_text(const Conversation& c, MaskMode mask, EosMode eos = EosMode::all) const;

 private:
  Sample render_jinja(const Conversation& c, MaskMode mask, EosMode eos) const;

  // A template string split into text runs and special ids.
  struct Piece {
    std::string text;
    int32_t id = -1;  // >= 0: a special token; -1: text
  };
  std::vector<Piece> compile(const std::string& s) const;

  Template tmpl_;
  const Tokenizer& tok_;
  std::shared_ptr<const jinja::Template> jinja_;
  std::vector<Piece> bos_, system_prefix_, system_suffix_, user_prefix_, user_suffix_, input_prefix_,
      assistant_prefix_, assistant_suffix_, turn_separator_;
};

// A short description of the tokenizer for error messages: its files, or its vocabulary size.
std::string tokenizer_description(const Tokenizer& t);

}  // namespace ift
