// A Jinja interpreter for chat templates: the `chat_template` of a Hugging Face tokenizer_config.json
// rendered exactly as transformers' apply_chat_template renders it (jinja2 with trim_blocks,
// lstrip_blocks, the loopcontrols extension, transformers' {% generation %} tag, its tojson and
// raise_exception), so that training text is byte for byte the text the model is served.
//
// What it covers (docs/data.md lists it with the differences):
//   tags        {% if/elif/else/endif %}, {% for x in xs [if cond] %}...{% else %}...{% endfor %} with
//               loop.index/index0/first/last/length/revindex/revindex0/previtem/nextitem and tuple
//               targets (for k, v in d.items()), {% set x = e %}, {% set ns.attr = e %},
//               {% set x %}...{% endset %}, {% break %}, {% continue %}, {% macro %}, {% raw %},
//               {% generation %}...{% endgeneration %}, comments; whitespace control {%- -%} {%+ +%}
//   expressions literals (strings with Python escapes, ints, floats, lists, dicts, tuples),
//               + - * / // % ** ~, == != < > <= >=, and or not, in, not in, is [not] TEST,
//               a if c else b, indexing, slicing (messages[1:], s[::-1]), attribute/item access,
//               calls with keyword arguments, filters with arguments
//   filters     trim tojson length count upper lower title capitalize default/d first last join
//               replace string int float list items reverse unique abs selectattr rejectattr select
//               reject map indent wordcount sum round safe
//   tests       defined undefined none string number integer float boolean mapping iterable
//               sequence callable true false even odd divisibleby eq/equalto/== ne/!= lt gt le ge
//               in lower upper sameas
//   methods     str: strip lstrip rstrip startswith endswith split splitlines upper lower title
//               capitalize replace find count join; dict: items keys values get
//   globals     raise_exception(msg), namespace(...), range(...), strftime_now(fmt), dict(...),
//               plus whatever the caller puts in the context (messages, tools, bos_token, ...)
//
// Anything else (an unknown tag, filter, test, method or syntax) is an ift::Error
// "NAME:LINE:COL: what", where NAME is the template's name (its file, or "chat_template of
// DIR/tokenizer_config.json"). Errors raised while rendering name the line and column of the
// expression that failed; raise_exception's message is passed on as the template wrote it.
//
// Values follow Python: undefined renders as "" and is falsy; None renders "None"; lists and dicts
// are shared and immutable (transformers renders in jinja2's ImmutableSandboxedEnvironment), except
// namespace() objects, whose attributes {% set ns.x = ... %} assigns.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace ift::jinja {

class Value;
using List = std::vector<Value>;
// A dict keeps insertion order, as Python's does (tojson prints keys in that order).
struct Dict {
  std::vector<std::pair<std::string, Value>> items;
  const Value* find(std::string_view key) const;
  Value* find(std::string_view key);
  void set(const std::string& key, Value v);
};
struct Args;
using Function = std::function<Value(Args&)>;

class Value {
 public:
  enum class Kind { undefined, none, boolean, integer, real, string, list, dict, function };

  Value() = default;  // undefined
  static Value none();
  Value(bool b);
  Value(int64_t i);
  Value(int i) : Value(static_cast<int64_t>(i)) {}
  Value(double d);
  Value(std::string s);
  Value(const char* s) : Value(std::string(s)) {}
  Value(List l);
  Value(Dict d);
  static Value function(Function f);
  static Value namespace_object(Dict d);  // a dict whose attributes may be assigned
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::undefined; }
  bool is_none() const { return kind_ == Kind::none; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_number() const { return kind_ == Kind::integer || kind_ == Kind::real; }
  bool is_list() const { return kind_ == Kind::list; }
  bool is_dict() const { return kind_ == Kind::dict; }
  bool is_namespace() const { return kind_ == Kind::dict && namespace_; }

  bool truthy() const;
  bool boolean() const { return b_; }
  int64_t integer() const { return i_; }
  double real() const { return kind_ == Kind::integer ? static_cast<double>(i_) : d_; }
  const std::string& str() const { return s_; }
  const List& list() const { return *list_; }
  const Dict& dict() const { return *dict_; }
  Dict& mutable_dict() const { return *dict_; }  // namespace objects only
  const Function& func() const { return *func_; }

  std::string to_string() const;  // Python's str(); undefined is ""
  std::string repr() const;       // Python's repr()
  const char* type_name() const;

 private:
  Kind kind_ = Kind::undefined;
  bool b_ = false;
  bool namespace_ = false;
  int64_t i_ = 0;
  double d_ = 0;
  std::string s_;
  std::shared_ptr<List> list_;
  std::shared_ptr<Dict> dict_;
  std::shared_ptr<Function> func_;
};

bool operator==(const Value& a, const Value& b);

// Arguments of a call: positional, then keyword.
struct Args {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
  // The argument at `index` or named `name`, or undefined.
  Value get(size_t index, std::string_view name) const;
};

// Python's str.strip(): Unicode whitespace off both ends.
std::string py_strip(std::string_view s);

// Python's json.dumps(v, ensure_ascii=False, indent=indent, sort_keys=...) as transformers' tojson
// calls it; indent < 0 for none.
std::string to_json(const Value& v, int indent = -1, bool sort_keys = false);

// The rendered text and, in output order, the byte ranges [begin, end) that {% generation %}
// blocks produced.
struct Rendered {
  std::string text;
  std::vector<std::pair<size_t, size_t>> generation;
};

class Template {
 public:
  // Parses `source`; `name` stands for it in errors. Throws ift::Error "NAME:LINE:COL: ..." on
  // anything it does not support.
  Template(std::string_view source, std::string name);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with the variables of `context` (a dict). Thread-safe: rendering never changes the
  // parsed template.
  Rendered render(const Dict& context) const;
  // True when the template has a {% generation %} block somewhere.
  bool has_generation() const;
  const std::string& name() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace ift::jinja
