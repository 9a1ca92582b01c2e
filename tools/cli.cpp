#include "tools/cli.h"

#include <charconv>
#include <sstream>

#include "engine/base/error.h"

namespace ift::cli {

Parser::Parser(std::string usage, std::string description)
    : usage_(std::move(usage)), description_(std::move(description)) {}

void Parser::option(std::string name, std::string metavar, std::string default_value, std::string help) {
  specs_.push_back({std::move(name), std::move(metavar), std::move(default_value), std::move(help), Kind::value});
}

void Parser::option(std::string name, std::string metavar, std::string help, Required) {
  specs_.push_back({std::move(name), std::move(metavar), "", std::move(help), Kind::required_value});
}

void Parser::repeated(std::string name, std::string metavar, std::string help) {
  specs_.push_back({std::move(name), std::move(metavar), "", std::move(help), Kind::repeated});
}

void Parser::flag(std::string name, std::string help) {
  specs_.push_back({std::move(name), "", "", std::move(help), Kind::flag});
}

void Parser::positional(std::string name, std::string help, int min_count, int max_count) {
  positional_name_ = std::move(name);
  positional_help_ = std::move(help);
  positional_min_ = min_count;
  positional_max_ = max_count;
}

const Parser::Spec& Parser::spec(const std::string& name) const {
  for (const Spec& s : specs_)
    if (s.name == name) return s;
  fail(usage_, ": unknown option '", name, "' (see --help)");
}

bool Parser::parse(std::span<char* const> args) {
  values_.clear();
  positionals_.clear();
  bool options_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    if (!options_done && (arg == "--help" || arg == "-h")) {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    if (!options_done && arg == "--") {
      options_done = true;
      continue;
    }
    if (options_done || arg.size() < 2 || arg[0] != '-' || (arg[1] != '-' && !std::isalpha((unsigned char)arg[1]))) {
      positionals_.push_back(arg);
      continue;
    }
    std::string value;
    bool inline_value = false;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      inline_value = true;
    }
    const Spec& s = spec(arg);
    if (s.kind == Kind::flag) {
      IFT_CHECK(!inline_value, usage_, ": option '", arg, "' takes no value");
      values_[s.name] = {"1"};
      continue;
    }
    if (!inline_value) {
      IFT_CHECK(i + 1 < args.size(), usage_, ": option '", arg, "' needs a value (", s.metavar, ")");
      value = args[++i];
    }
    if (s.kind == Kind::repeated) {
      values_[s.name].push_back(value);
    } else {
      IFT_CHECK(!values_.count(s.name), usage_, ": option '", arg, "' given twice");
      values_[s.name] = {value};
    }
  }
  for (const Spec& s : specs_)
    IFT_CHECK(s.kind != Kind::required_value || values_.count(s.name), usage_, ": option '", s.name,
              "' is required (see --help)");
  const int n = static_cast<int>(positionals_.size());
  IFT_CHECK(n >= positional_min_, usage_, ": missing ", positional_name_.empty() ? "argument" : positional_name_,
            " (see --help)");
  IFT_CHECK(n <= positional_max_, usage_, ": unexpected argument '", positionals_[positional_max_], "' (see --help)");
  return true;
}

std::string Parser::help() const {
  std::ostringstream os;
  os << "usage: " << usage_;
  if (!specs_.empty()) os << " [options]";
  if (!positional_name_.empty()) os << " " << positional_name_;
  os << "\n\n" << description_ << "\n";
  if (!positional_name_.empty()) os << "\n  " << positional_name_ << "\n      " << positional_help_ << "\n";
  if (!specs_.empty()) os << "\noptions:\n";
  for (const Spec& s : specs_) {
    std::string left = s.name + (s.metavar.empty() ? "" : " " + s.metavar);
    os << "  " << left;
    os << std::string(left.size() < 24 ? 24 - left.size() : 1, ' ') << s.help;
    switch (s.kind) {
      case Kind::value: if (!s.default_value.empty()) os << " (default: " << s.default_value << ")"; break;
      case Kind::required_value: os << " (required)"; break;
      case Kind::repeated: os << " (repeatable)"; break;
      case Kind::flag: break;
    }
    os << "\n";
  }
  os << "  --help                  show this help\n";
  return os.str();
}

bool Parser::given(const std::string& name) const {
  spec(name);
  return values_.count(name) > 0;
}

const std::string& Parser::str(const std::string& name) const {
  const Spec& s = spec(name);
  IFT_ASSERT(s.kind == Kind::value || s.kind == Kind::required_value);
  auto it = values_.find(name);
  return it == values_.end() ? s.default_value : it->second.front();
}

int64_t Parser::integer(const std::string& name) const {
  const std::string& v = str(name);
  int64_t out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  IFT_CHECK(ec == std::errc() && end == v.data() + v.size() && !v.empty(), usage_, ": option '", name,
            "' needs an integer, got '", v, "'");
  return out;
}

double Parser::real(const std::string& name) const {
  const std::string& v = str(name);
  double out = 0;
  auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
  IFT_CHECK(ec == std::errc() && end == v.data() + v.size() && !v.empty(), usage_, ": option '", name,
            "' needs a number, got '", v, "'");
  return out;
}

bool Parser::on(const std::string& name) const {
  IFT_ASSERT(spec(name).kind == Kind::flag);
  return values_.count(name) > 0;
}

const std::vector<std::string>& Parser::all(const std::string& name) const {
  static const std::vector<std::string> none;
  IFT_ASSERT(spec(name).kind == Kind::repeated);
  auto it = values_.find(name);
  return it == values_.end() ? none : it->second;
}

}  // namespace ift::cli
