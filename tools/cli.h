// Command-line options for the `ift` subcommands.
//
// Each option is declared once, with its default, and the help text is generated from those
// declarations, so help and behaviour cannot drift apart. Unknown options, missing values and
// malformed numbers are errors (ift::Error) that name the option.
//
//   cli::Parser p("ift dump", "Run one batch through a model and write loss, logits and gradients.");
//   p.option("--model", "DIR", "model directory (config.json + model.safetensors)", cli::required);
//   p.option("--backend", "NAME", "cpu", "backend that runs the batch");
//   if (!p.parse(args)) return 0;   // --help was printed
//   std::string dir = p.str("--model");
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace ift::cli {

struct Required {};
inline constexpr Required required{};

class Parser {
 public:
  Parser(std::string usage, std::string description);

  // An option with a value and a default ("" for none).
  void option(std::string name, std::string metavar, std::string default_value, std::string help);
  // An option with a value that must be given.
  void option(std::string name, std::string metavar, std::string help, Required);
  // An option with a value that may be repeated (--data A --data B); values in order.
  void repeated(std::string name, std::string metavar, std::string help);
  // A boolean switch, off unless given.
  void flag(std::string name, std::string help);
  // Positional arguments: `name` shown in help; min/max counts.
  void positional(std::string name, std::string help, int min_count, int max_count);

  // Parses args (without the program and subcommand names). Returns false when --help was given
  // (the help is printed to stdout). Throws ift::Error on anything malformed.
  bool parse(std::span<char* const> args);
  std::string help() const;

  bool given(const std::string& name) const;  // given on the command line (not defaulted)
  const std::string& str(const std::string& name) const;
  int64_t integer(const std::string& name) const;
  double real(const std::string& name) const;
  bool on(const std::string& name) const;  // a flag
  const std::vector<std::string>& all(const std::string& name) const;  // repeated option
  const std::vector<std::string>& positionals() const { return positionals_; }

 private:
  enum class Kind { value, required_value, repeated, flag };
  struct Spec {
    std::string name, metavar, default_value, help;
    Kind kind;
  };
  const Spec& spec(const std::string& name) const;

  std::string usage_, description_;
  std::vector<Spec> specs_;
  std::string positional_name_, positional_help_;
  int positional_min_ = 0, positional_max_ = 0;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positionals_;
};

}  // namespace ift::cli
