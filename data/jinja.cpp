// The chat-template Jinja interpreter: values with Python semantics, a lexer that applies jinja2's
// whitespace rules (trim_blocks, lstrip_blocks, - and + markers) while it scans, a recursive-descent
// parser with jinja2's operator precedence, and a tree-walking renderer.
#include "data/jinja.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <ctime>
#include <map>
#include <sstream>

#include "engine/base/error.h"
#include "tokenizer/utf8.h"

namespace ift::jinja {

// ---- values ---------------------------------------------------------------------------------

const Value* Dict::find(std::string_view key) const {
  for (const auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}
Value* Dict::find(std::string_view key) {
  for (auto& [k, v] : items)
    if (k == key) return &v;
  return nullptr;
}
void Dict::set(const std::string& key, Value v) {
  if (Value* old = find(key)) {
    *old = std::move(v);
  } else {
    items.emplace_back(key, std::move(v));
  }
}

Value Value::none() {
  Value v;
  v.kind_ = Kind::none;
  return v;
}
Value::Value(bool b) : kind_(Kind::boolean), b_(b) {}
Value::Value(int64_t i) : kind_(Kind::integer), i_(i) {}
Value::Value(double d) : kind_(Kind::real), d_(d) {}
Value::Value(std::string s) : kind_(Kind::string), s_(std::move(s)) {}
Value::Value(List l) : kind_(Kind::list), list_(std::make_shared<List>(std::move(l))) {}
Value::Value(Dict d) : kind_(Kind::dict), dict_(std::make_shared<Dict>(std::move(d))) {}
Value Value::function(Function f) {
  Value v;
  v.kind_ = Kind::function;
  v.func_ = std::make_shared<Function>(std::move(f));
  return v;
}
Value Value::namespace_object(Dict d) {
  Value v(std::move(d));
  v.namespace_ = true;
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null: return none();
    case nlohmann::json::value_t::boolean: return Value(j.get<bool>());
    case nlohmann::json::value_t::number_integer: return Value(j.get<int64_t>());
    case nlohmann::json::value_t::number_unsigned: return Value(static_cast<int64_t>(j.get<uint64_t>()));
    case nlohmann::json::value_t::number_float: return Value(j.get<double>());
    case nlohmann::json::value_t::string: return Value(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      List l;
      for (const auto& e : j) l.push_back(from_json(e));
      return Value(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      for (const auto& [k, e] : j.items()) d.items.emplace_back(k, from_json(e));
      return Value(std::move(d));
    }
    default: fail("jinja: JSON value of type ", j.type_name(), " cannot be a template variable");
  }
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::undefined:
    case Kind::none: return false;
    case Kind::boolean: return b_;
    case Kind::integer: return i_ != 0;
    case Kind::real: return d_ != 0;
    case Kind::string: return !s_.empty();
    case Kind::list: return !list_->empty();
    case Kind::dict: return namespace_ || !dict_->items.empty();
    case Kind::function: return true;
  }
  return false;
}

const char* Value::type_name() const {
  switch (kind_) {
    case Kind::undefined: return "undefined";
    case Kind::none: return "None";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::real: return "float";
    case Kind::string: return "str";
    case Kind::list: return "list";
    case Kind::dict: return namespace_ ? "Namespace" : "dict";
    case Kind::function: return "function";
  }
  return "?";
}

namespace {

// Python's repr(float): the shortest digits that round-trip, in fixed notation when the decimal
// exponent is in [-4, 16), otherwise d.ddde+XX.
std::string float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string s(buf, r.ptr);
  const size_t e = s.find('e');
  std::string mant = s.substr(0, e);
  const int exp = std::stoi(s.substr(e + 1));
  std::string sign;
  if (mant[0] == '-') {
    sign = "-";
    mant.erase(0, 1);
  }
  std::string digits;
  for (char c : mant)
    if (c != '.') digits += c;
  if (exp >= -4 && exp < 16) {
    std::string out;
    if (exp < 0) {
      out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else if (static_cast<size_t>(exp) + 1 >= digits.size()) {
      out = digits + std::string(exp + 1 - digits.size(), '0') + ".0";
    } else {
      out = digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    }
    return sign + out;
  }
  std::string out = digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char ebuf[16];
  std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return sign + out + ebuf;
}

// Decodes one code point at s[i]; invalid bytes count as one code point each (templates see
// validated UTF-8 from the readers, so this only keeps the walk total).
char32_t next_code_point(std::string_view s, size_t& i) {
  const size_t n = utf8::valid_prefix_length(s.substr(i));
  const auto b = static_cast<unsigned char>(s[i]);
  if (n <= 1) {
    ++i;
    return b;
  }
  char32_t cp = b & (0xFF >> (n + 1));
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

std::vector<std::string_view> code_points(std::string_view s) {
  std::vector<std::string_view> out;
  for (size_t i = 0; i < s.size();) {
    const size_t start = i;
    next_code_point(s, i);
    out.push_back(s.substr(start, i - start));
  }
  return out;
}

// Python's str.isspace for one code point.
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Python's str.strip / lstrip / rstrip: whitespace, or the code points in `chars`.
std::string strip(std::string_view s, bool left, bool right, const Value& chars = Value()) {
  std::vector<std::string_view> set;
  const bool custom = chars.is_string();
  if (custom) set = code_points(chars.str());
  auto strippable = [&](std::string_view cp) {
    if (custom) return std::find(set.begin(), set.end(), cp) != set.end();
    size_t k = 0;
    return is_space(next_code_point(cp, k));
  };
  std::vector<std::string_view> cps = code_points(s);
  size_t b = 0, e = cps.size();
  if (left)
    while (b < e && strippable(cps[b])) ++b;
  if (right)
    while (e > b && strippable(cps[e - 1])) --e;
  std::string out;
  for (size_t k = b; k < e; ++k) out += cps[k];
  return out;
}

}  // namespace

std::string py_strip(std::string_view s) { return strip(s, true, true); }

namespace {

std::string string_repr(const std::string& s) {
  const bool dq = s.find('\'') != std::string::npos && s.find('"') == std::string::npos;
  const char q = dq ? '"' : '\'';
  std::string out(1, q);
  for (unsigned char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == q) out += std::string("\\") + static_cast<char>(q);
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + q;
}

}  // namespace

std::string Value::to_string() const {
  switch (kind_) {
    case Kind::undefined: return "";
    case Kind::none: return "None";
    case Kind::boolean: return b_ ? "True" : "False";
    case Kind::integer: return std::to_string(i_);
    case Kind::real: return float_repr(d_);
    case Kind::string: return s_;
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::string: return string_repr(s_);
    case Kind::list: {
      std::string out = "[";
      for (size_t k = 0; k < list_->size(); ++k) out += (k ? ", " : "") + (*list_)[k].repr();
      return out + "]";
    }
    case Kind::dict: {
      if (namespace_) {
        std::string out = "<Namespace {";
        for (size_t k = 0; k < dict_->items.size(); ++k)
          out += (k ? ", " : "") + string_repr(dict_->items[k].first) + ": " + dict_->items[k].second.repr();
        return out + "}>";
      }
      std::string out = "{";
      for (size_t k = 0; k < dict_->items.size(); ++k)
        out += (k ? ", " : "") + string_repr(dict_->items[k].first) + ": " + dict_->items[k].second.repr();
      return out + "}";
    }
    case Kind::function: return "<function>";
    default: return to_string();
  }
}

bool operator==(const Value& a, const Value& b) {
  using K = Value::Kind;
  if (a.is_number() && b.is_number()) {
    if (a.kind() == K::integer && b.kind() == K::integer) return a.integer() == b.integer();
    return a.real() == b.real();
  }
  // Python: True == 1.
  if ((a.kind() == K::boolean && b.is_number()) || (b.kind() == K::boolean && a.is_number())) {
    const double x = a.kind() == K::boolean ? (a.boolean() ? 1.0 : 0.0) : a.real();
    const double y = b.kind() == K::boolean ? (b.boolean() ? 1.0 : 0.0) : b.real();
    return x == y;
  }
  if (a.kind() != b.kind()) return false;
  switch (a.kind()) {
    case K::undefined:
    case K::none: return true;
    case K::boolean: return a.boolean() == b.boolean();
    case K::string: return a.str() == b.str();
    case K::list: return a.list() == b.list();
    case K::dict: {
      if (a.dict().items.size() != b.dict().items.size()) return false;
      for (const auto& [k, v] : a.dict().items) {
        const Value* w = b.dict().find(k);
        if (!w || !(v == *w)) return false;
      }
      return true;
    }
    case K::function: return &a.func() == &b.func();
    default: return false;
  }
}

Value Args::get(size_t index, std::string_view name) const {
  for (const auto& [k, v] : keyword)
    if (k == name) return v;
  return index < positional.size() ? positional[index] : Value();
}

namespace {

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void json_dump(std::string& out, const Value& v, int indent, bool sort_keys, int level) {
  using K = Value::Kind;
  const std::string item_sep = indent >= 0 ? "," : ", ";
  auto newline = [&](int l) {
    if (indent >= 0) out += "\n" + std::string(static_cast<size_t>(indent * l), ' ');
  };
  switch (v.kind()) {
    case K::none: out += "null"; return;
    case K::boolean: out += v.boolean() ? "true" : "false"; return;
    case K::integer: out += std::to_string(v.integer()); return;
    case K::real: {
      const double d = v.real();
      out += std::isnan(d) ? "NaN" : std::isinf(d) ? (d > 0 ? "Infinity" : "-Infinity") : float_repr(d);
      return;
    }
    case K::string: json_string(out, v.str()); return;
    case K::list: {
      if (v.list().empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.list().size(); ++k) {
        if (k) out += item_sep;
        newline(level + 1);
        json_dump(out, v.list()[k], indent, sort_keys, level + 1);
      }
      newline(level);
      out += ']';
      return;
    }
    case K::dict: {
      if (v.dict().items.empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (const auto& kv : v.dict().items) items.push_back(&kv);
      if (sort_keys)
        std::stable_sort(items.begin(), items.end(), [](auto* x, auto* y) { return x->first < y->first; });
      out += '{';
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += item_sep;
        newline(level + 1);
        json_string(out, items[k]->first);
        out += ": ";
        json_dump(out, items[k]->second, indent, sort_keys, level + 1);
      }
      newline(level);
      out += '}';
      return;
    }
    default: fail("tojson: a value of type ", v.type_name(), " is not JSON serializable");
  }
}

}  // namespace

std::string to_json(const Value& v, int indent, bool sort_keys) {
  std::string out;
  json_dump(out, v, indent, sort_keys, 0);
  return out;
}

// ---- lexer ----------------------------------------------------------------------------------

namespace {

struct Pos {
  int line = 1, col = 1;
};

enum class Tok {
  text,        // template text, whitespace rules already applied
  var_begin,   // {{
  var_end,     // }}
  block_begin, // {%
  block_end,   // %}
  name,
  string,
  integer,
  real,
  op,          // punctuation and operators
  eof,
};

struct Token {
  Tok type;
  std::string text;  // text, name, string value (unescaped), number spelling, operator
  Pos pos;
};

bool ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Python's str.rstrip() / "\s+" for the whitespace rules (whitespace in template text next to
// tags is ASCII in every template seen; a Unicode space there would be kept, unlike jinja2).
std::string rstrip_ws(std::string_view s) {
  size_t e = s.size();
  while (e > 0 && ascii_space(s[e - 1])) --e;
  return std::string(s.substr(0, e));
}

class Lexer {
 public:
  Lexer(std::string_view source, const std::string& name) : name_(name) {
    // jinja2 normalises newlines and drops one trailing newline (keep_trailing_newline=False).
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
  }

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < src_.size()) {
      size_t start = std::string::npos;
      for (const char* open : {"{{", "{%", "{#"}) start = std::min(start, src_.find(open, pos_));
      if (start == std::string::npos) {
        emit_text(src_.substr(pos_), at(pos_));
        pos_ = src_.size();
        break;
      }
      const char kind = src_[start + 1];
      const char sign = start + 2 < src_.size() ? src_[start + 2] : '\0';
      std::string text = src_.substr(pos_, start - pos_);
      const Pos text_pos = at(pos_);
      if (sign == '-') {
        text = rstrip_ws(text);
      } else if (sign != '+' && kind != '{') {  // lstrip_blocks
        const size_t l = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if ((l > 0 || line_starting) && l < text.size() &&
            std::all_of(text.begin() + static_cast<long>(l), text.end(), ascii_space))
          text.resize(l);
      }
      emit_text(text, text_pos);
      pos_ = start + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      char end_sign = '\0';
      if (kind == '#') {
        const size_t end = src_.find("#}", pos_);
        if (end == std::string::npos) error(at(start), "comment is never closed with #}");
        if (end > pos_ && (src_[end - 1] == '-' || src_[end - 1] == '+')) end_sign = src_[end - 1];
        pos_ = end + 2;
      } else {
        const bool var = kind == '{';
        out_.push_back({var ? Tok::var_begin : Tok::block_begin, "", at(start)});
        end_sign = lex_tag(var, at(start));
        if (!var && out_.size() >= 3 && out_[out_.size() - 2].type == Tok::name && out_[out_.size() - 2].text == "raw" &&
            out_[out_.size() - 3].type == Tok::block_begin) {
          lex_raw(end_sign);
          line_starting = false;
          continue;
        }
        if (var) {
          // trim_blocks does not apply to {{ }}.
          if (end_sign != '-') end_sign = '+';
        }
      }
      line_starting = after_tag(end_sign);
    }
    out_.push_back({Tok::eof, "", at(src_.size())});
    return std::move(out_);
  }

 private:
  [[noreturn]] void error(Pos p, const std::string& what) const { fail(name_, ":", p.line, ":", p.col, ": ", what); }

  Pos at(size_t offset) {
    // Incremental: offsets are asked for in increasing order, mostly.
    if (offset < line_offset_) {
      line_offset_ = 0;
      line_ = 1;
      line_start_ = 0;
    }
    for (; line_offset_ < offset && line_offset_ < src_.size(); ++line_offset_) {
      if (src_[line_offset_] == '\n') {
        ++line_;
        line_start_ = line_offset_ + 1;
      }
    }
    // Columns count code points.
    int col = 1;
    for (size_t i = line_start_; i < offset;) {
      next_code_point(src_, i);
      ++col;
    }
    return {line_, col};
  }

  void emit_text(const std::string& text, Pos p) {
    if (!text.empty()) out_.push_back({Tok::text, text, p});
  }

  // Applies what follows a tag's end: "-" strips all whitespace, trim_blocks one newline, "+" (and
  // every {{ }}) nothing. Returns whether the consumed text ended a line (jinja2's line_starting).
  bool after_tag(char end_sign) {
    if (end_sign == '-') {
      const size_t b = pos_;
      while (pos_ < src_.size() && ascii_space(src_[pos_])) ++pos_;
      return pos_ > b && src_[pos_ - 1] == '\n';
    }
    if (end_sign != '+' && pos_ < src_.size() && src_[pos_] == '\n') {
      ++pos_;
      return true;
    }
    return false;
  }

  // {% raw %}...{% endraw %}: the text between, verbatim (whitespace markers on the tags apply).
  void lex_raw(char end_sign) {
    out_.resize(out_.size() - 3);  // block_begin raw block_end
    after_tag(end_sign);
    size_t search = pos_;
    while (true) {
      const size_t open = src_.find("{%", search);
      if (open == std::string::npos) error(at(pos_), "{% raw %} is never closed with {% endraw %}");
      size_t k = open + 2;
      const char sign = k < src_.size() ? src_[k] : '\0';
      if (sign == '-' || sign == '+') ++k;
      while (k < src_.size() && ascii_space(src_[k])) ++k;
      if (src_.compare(k, 6, "endraw") != 0) {
        search = open + 2;
        continue;
      }
      k += 6;
      while (k < src_.size() && ascii_space(src_[k])) ++k;
      char esign = '\0';
      if (k < src_.size() && (src_[k] == '-' || src_[k] == '+')) esign = src_[k++];
      if (src_.compare(k, 2, "%}") != 0) error(at(open), "malformed {% endraw %}");
      std::string text = src_.substr(pos_, open - pos_);
      if (sign == '-') text = rstrip_ws(text);
      emit_text(text, at(pos_));
      pos_ = k + 2;
      after_tag(esign);
      return;
    }
  }

  // Lexes the inside of {{ }} or {% %} up to its end at bracket depth 0; returns the end's sign.
  char lex_tag(bool var, Pos open) {
    int depth = 0;
    while (true) {
      while (pos_ < src_.size() && ascii_space(src_[pos_])) ++pos_;
      if (pos_ >= src_.size()) error(open, var ? "{{ is never closed with }}" : "{% is never closed with %}");
      const char c = src_[pos_];
      const std::string_view rest = std::string_view(src_).substr(pos_);
      if (depth == 0) {
        for (const char sign : {'-', '+', '\0'}) {
          const std::string end = (sign ? std::string(1, sign) : std::string()) + (var ? "}}" : "%}");
          if (rest.starts_with(end)) {
            out_.push_back({var ? Tok::var_end : Tok::block_end, "", at(pos_)});
            pos_ += end.size();
            return sign;
          }
        }
      }
      const Pos p = at(pos_);
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = pos_;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        out_.push_back({Tok::name, src_.substr(pos_, e - pos_), p});
        pos_ = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        size_t e = pos_;
        bool real = false;
        while (e < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        if (e + 1 < src_.size() && src_[e] == '.' && std::isdigit(static_cast<unsigned char>(src_[e + 1]))) {
          real = true;
          ++e;
          while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
        }
        if (e < src_.size() && (src_[e] == 'e' || src_[e] == 'E')) {
          size_t k = e + 1;
          if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
          if (k < src_.size() && std::isdigit(static_cast<unsigned char>(src_[k]))) {
            real = true;
            e = k;
            while (e < src_.size() && std::isdigit(static_cast<unsigned char>(src_[e]))) ++e;
          }
        }
        std::string num = src_.substr(pos_, e - pos_);
        num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
        out_.push_back({real ? Tok::real : Tok::integer, num, p});
        pos_ = e;
      } else if (c == '\'' || c == '"') {
        out_.push_back({Tok::string, lex_string(c, p), p});
      } else {
        static const char* ops[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                    "=",  ".",  ",",  ":",  "|",  "(", ")", "[", "]", "{", "}"};
        const char* found = nullptr;
        for (const char* o : ops)
          if (rest.starts_with(o)) {
            found = o;
            break;
          }
        if (!found) error(p, std::string("unexpected character '") + c + "'");
        const std::string o(found);
        if (o == "(" || o == "[" || o == "{") ++depth;
        if (o == ")" || o == "]" || o == "}") {
          if (depth == 0) error(p, "unmatched '" + o + "'");
          --depth;
        }
        out_.push_back({Tok::op, o, p});
        pos_ += o.size();
      }
    }
  }

  // A string literal with Python's escapes (jinja2 decodes them with "unicode-escape").
  std::string lex_string(char quote, Pos p) {
    std::string out;
    size_t i = pos_ + 1;
    while (true) {
      if (i >= src_.size()) error(p, "string literal is never closed");
      const char c = src_[i];
      if (c == quote) break;
      if (c != '\\') {
        out += c;
        ++i;
        continue;
      }
      if (i + 1 >= src_.size()) error(p, "string literal is never closed");
      const char e = src_[i + 1];
      i += 2;
      auto hex = [&](int n) {
        if (i + n > src_.size()) error(p, "truncated \\x/\\u escape in a string literal");
        uint32_t v = 0;
        for (int k = 0; k < n; ++k) {
          const char h = src_[i + k];
          if (!std::isxdigit(static_cast<unsigned char>(h))) error(p, "bad hex digit in a string escape");
          v = v * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(h)) ? h - '0' : (std::tolower(h) - 'a' + 10));
        }
        i += n;
        return v;
      };
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'v': out += '\v'; break;
        case '0': out += '\0'; break;
        case '\n': break;  // line continuation
        case 'x': utf8::append(out, hex(2)); break;
        case 'u': utf8::append(out, hex(4)); break;
        case 'U': utf8::append(out, hex(8)); break;
        default: out += '\\'; out += e;  // Python keeps unknown escapes
      }
    }
    pos_ = i + 1;
    return out;
  }

  const std::string& name_;
  std::string src_;
  size_t pos_ = 0;
  std::vector<Token> out_;
  size_t line_offset_ = 0, line_start_ = 0;
  int line_ = 1;
};

// ---- syntax tree ----------------------------------------------------------------------------

struct Expr {
  enum class Kind {
    literal, name, list, tuple, dict, attr, item, slice, call, filter, test, unary, binary, cond
  };
  Kind kind;
  Pos pos;
  std::string name;  // name, attribute, filter, test, operator
  Value value;       // literal
  std::vector<std::unique_ptr<Expr>> args;  // operands; call/filter/test: callee/subject first
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  bool negated = false;  // is not
};
using ExprPtr = std::unique_ptr<Expr>;

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum class Kind { text, output, if_, for_, set, set_block, generation, break_, continue_, macro };
  Kind kind;
  Pos pos;
  std::string text;                  // text
  ExprPtr expr;                      // output, set value, for iterable
  std::vector<std::pair<ExprPtr, Body>> branches;  // if: (condition, body)...; else has a null condition
  std::vector<std::string> targets;  // for/set names (tuple unpacking); set ns.attr: {ns, attr}
  bool attr_target = false;
  ExprPtr filter;                    // for ... if cond
  Body body, else_body;
  std::vector<std::pair<std::string, ExprPtr>> params;  // macro: name, default (may be null)
};

// ---- parser ---------------------------------------------------------------------------------

class Parser {
 public:
  Parser(std::vector<Token> toks, const std::string& name) : t_(std::move(toks)), name_(name) {}

  Body parse_template() {
    Body b = parse_body({});
    if (peek().type != Tok::eof) error(peek().pos, "unexpected tag");
    return b;
  }

  bool has_generation = false;

 private:
  [[noreturn]] void error(Pos p, const std::string& what) const { fail(name_, ":", p.line, ":", p.col, ": ", what); }
  const Token& peek(size_t k = 0) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  const Token& next() { return t_[std::min(i_++, t_.size() - 1)]; }
  bool is_op(const char* o, size_t k = 0) const { return peek(k).type == Tok::op && peek(k).text == o; }
  bool is_name(const char* n, size_t k = 0) const { return peek(k).type == Tok::name && peek(k).text == n; }
  void expect_op(const char* o) {
    if (!is_op(o)) error(peek().pos, std::string("expected '") + o + "', got " + describe(peek()));
    ++i_;
  }
  std::string expect_name() {
    if (peek().type != Tok::name) error(peek().pos, "expected a name, got " + describe(peek()));
    return next().text;
  }
  void expect_block_end() {
    if (peek().type != Tok::block_end) error(peek().pos, "expected the end of the tag (%}), got " + describe(peek()));
    ++i_;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::text: return "text";
      case Tok::var_begin: return "'{{'";
      case Tok::var_end: return "'}}'";
      case Tok::block_begin: return "'{%'";
      case Tok::block_end: return "'%}'";
      case Tok::eof: return "the end of the template";
      case Tok::string: return "a string";
      default: return "'" + t.text + "'";
    }
  }

  // Parses nodes until a block tag whose name is in `stops` (left unconsumed: i_ at its name).
  Body parse_body(const std::vector<std::string>& stops) {
    Body body;
    while (true) {
      const Token& t = peek();
      if (t.type == Tok::eof) {
        if (!stops.empty()) error(t.pos, "the template ended inside a block; expected {% " + stops.back() + " %}");
        return body;
      }
      if (t.type == Tok::text) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::text;
        n->pos = t.pos;
        n->text = t.text;
        body.push_back(std::move(n));
        ++i_;
      } else if (t.type == Tok::var_begin) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Kind::output;
        n->pos = t.pos;
        ++i_;
        n->expr = parse_expression();
        if (peek().type != Tok::var_end) error(peek().pos, "expected '}}', got " + describe(peek()));
        ++i_;
        body.push_back(std::move(n));
      } else if (t.type == Tok::block_begin) {
        const Token& kw = peek(1);
        if (kw.type != Tok::name) error(kw.pos, "expected a tag name after {%");
        if (std::find(stops.begin(), stops.end(), kw.text) != stops.end()) {
          ++i_;
          return body;
        }
        ++i_;
        body.push_back(parse_tag());
      } else {
        error(t.pos, "unexpected " + describe(t));
      }
    }
  }

  std::unique_ptr<Node> parse_tag() {
    const Token kw = next();
    auto n = std::make_unique<Node>();
    n->pos = kw.pos;
    const std::string& k = kw.text;
    if (k == "if") {
      n->kind = Node::Kind::if_;
      ExprPtr cond = parse_expression();
      expect_block_end();
      while (true) {
        Body b = parse_body({"elif", "else", "endif"});
        const std::string stop = next().text;
        n->branches.emplace_back(std::move(cond), std::move(b));
        if (stop == "elif") {
          cond = parse_expression();
          expect_block_end();
        } else if (stop == "else") {
          expect_block_end();
          Body e = parse_body({"endif"});
          ++i_;
          expect_block_end();
          n->branches.emplace_back(nullptr, std::move(e));
          break;
        } else {
          expect_block_end();
          break;
        }
      }
    } else if (k == "for") {
      n->kind = Node::Kind::for_;
      n->targets.push_back(expect_name());
      while (is_op(",")) {
        ++i_;
        n->targets.push_back(expect_name());
      }
      if (!is_name("in")) error(peek().pos, "expected 'in' in the for tag");
      ++i_;
      n->expr = parse_expression(/*with_condexpr=*/false);
      if (is_name("if")) {
        ++i_;
        n->filter = parse_expression();
      }
      if (is_name("recursive")) error(peek().pos, "recursive for loops are not supported");
      expect_block_end();
      n->body = parse_body({"else", "endfor"});
      if (next().text == "else") {
        expect_block_end();
        n->else_body = parse_body({"endfor"});
        ++i_;
      }
      expect_block_end();
    } else if (k == "set") {
      n->targets.push_back(expect_name());
      if (is_op(".")) {
        ++i_;
        n->targets.push_back(expect_name());
        n->attr_target = true;
      }
      while (is_op(",") && !n->attr_target) {
        ++i_;
        n->targets.push_back(expect_name());
      }
      if (is_op("=")) {
        ++i_;
        n->kind = Node::Kind::set;
        n->expr = parse_tuple_or_expression();
        expect_block_end();
      } else {
        if (n->targets.size() != 1 || n->attr_target) error(peek().pos, "a block {% set %} takes one name");
        if (is_op("|")) error(peek().pos, "filters on a block {% set %} are not supported");
        n->kind = Node::Kind::set_block;
        expect_block_end();
        n->body = parse_body({"endset"});
        ++i_;
        expect_block_end();
      }
    } else if (k == "generation") {
      n->kind = Node::Kind::generation;
      has_generation = true;
      expect_block_end();
      n->body = parse_body({"endgeneration"});
      ++i_;
      expect_block_end();
    } else if (k == "break" || k == "continue") {
      n->kind = k == "break" ? Node::Kind::break_ : Node::Kind::continue_;
      expect_block_end();
    } else if (k == "macro") {
      n->kind = Node::Kind::macro;
      n->targets.push_back(expect_name());
      expect_op("(");
      while (!is_op(")")) {
        std::string p = expect_name();
        ExprPtr def;
        if (is_op("=")) {
          ++i_;
          def = parse_expression();
        }
        n->params.emplace_back(std::move(p), std::move(def));
        if (!is_op(",")) break;
        ++i_;
      }
      expect_op(")");
      expect_block_end();
      n->body = parse_body({"endmacro"});
      ++i_;
      expect_block_end();
    } else {
      error(kw.pos, "unsupported tag '" + k + "'");
    }
    return n;
  }

  ExprPtr make(Expr::Kind kind, Pos p) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = p;
    return e;
  }

  // `a, b` without brackets (set a, b = ...; the value side of set x = 1, 2).
  ExprPtr parse_tuple_or_expression() {
    const Pos p = peek().pos;
    ExprPtr first = parse_expression();
    if (!is_op(",")) return first;
    auto t = make(Expr::Kind::tuple, p);
    t->args.push_back(std::move(first));
    while (is_op(",")) {
      ++i_;
      if (peek().type == Tok::block_end) break;
      t->args.push_back(parse_expression());
    }
    return t;
  }

  ExprPtr parse_expression(bool with_condexpr = true) {
    ExprPtr e = parse_or();
    if (!with_condexpr) return e;
    while (is_name("if")) {
      const Pos p = next().pos;
      auto c = make(Expr::Kind::cond, p);
      ExprPtr cond = parse_or();
      ExprPtr other;
      if (is_name("else")) {
        ++i_;
        other = parse_expression();
      }
      c->args.push_back(std::move(e));
      c->args.push_back(std::move(cond));
      c->args.push_back(std::move(other));
      e = std::move(c);
    }
    return e;
  }

  ExprPtr binary(const std::string& op, ExprPtr a, ExprPtr b, Pos p) {
    auto e = make(Expr::Kind::binary, p);
    e->name = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr e = parse_and();
    while (is_name("or")) {
      const Pos p = next().pos;
      e = binary("or", std::move(e), parse_and(), p);
    }
    return e;
  }
  ExprPtr parse_and() {
    ExprPtr e = parse_not();
    while (is_name("and")) {
      const Pos p = next().pos;
      e = binary("and", std::move(e), parse_not(), p);
    }
    return e;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      const Pos p = next().pos;
      auto e = make(Expr::Kind::unary, p);
      e->name = "not";
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr e = parse_math1();
    while (true) {
      const Pos p = peek().pos;
      std::string op;
      if (peek().type == Tok::op &&
          (peek().text == "==" || peek().text == "!=" || peek().text == "<" || peek().text == ">" ||
           peek().text == "<=" || peek().text == ">=")) {
        op = next().text;
      } else if (is_name("in")) {
        ++i_;
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        i_ += 2;
        op = "not in";
      } else {
        return e;
      }
      e = binary(op, std::move(e), parse_math1(), p);
    }
  }
  ExprPtr parse_math1() {
    ExprPtr e = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& t = next();
      e = binary(t.text, std::move(e), parse_concat(), t.pos);
    }
    return e;
  }
  ExprPtr parse_concat() {
    ExprPtr e = parse_math2();
    while (is_op("~")) {
      const Pos p = next().pos;
      e = binary("~", std::move(e), parse_math2(), p);
    }
    return e;
  }
  ExprPtr parse_math2() {
    ExprPtr e = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& t = next();
      e = binary(t.text, std::move(e), parse_pow(), t.pos);
    }
    return e;
  }
  ExprPtr parse_pow() {
    ExprPtr e = parse_unary();
    while (is_op("**")) {
      const Pos p = next().pos;
      e = binary("**", std::move(e), parse_unary(), p);
    }
    return e;
  }
  ExprPtr parse_unary(bool with_filter = true) {
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token& t = next();
      e = make(Expr::Kind::unary, t.pos);
      e->name = t.text;
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_postfix(parse_primary());
    }
    if (with_filter) e = parse_filters(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    if (t.type == Tok::name) {
      ++i_;
      auto e = make(Expr::Kind::literal, t.pos);
      if (t.text == "true" || t.text == "True") e->value = Value(true);
      else if (t.text == "false" || t.text == "False") e->value = Value(false);
      else if (t.text == "none" || t.text == "None") e->value = Value::none();
      else {
        e->kind = Expr::Kind::name;
        e->name = t.text;
      }
      return e;
    }
    if (t.type == Tok::string) {
      ++i_;
      auto e = make(Expr::Kind::literal, t.pos);
      std::string s = t.text;
      while (peek().type == Tok::string) s += next().text;  // "a" "b" is "ab"
      e->value = Value(std::move(s));
      return e;
    }
    if (t.type == Tok::integer || t.type == Tok::real) {
      ++i_;
      auto e = make(Expr::Kind::literal, t.pos);
      if (t.type == Tok::integer) e->value = Value(static_cast<int64_t>(std::stoll(t.text)));
      else e->value = Value(std::stod(t.text));
      return e;
    }
    if (is_op("(")) {
      ++i_;
      if (is_op(")")) {
        ++i_;
        return make(Expr::Kind::tuple, t.pos);
      }
      ExprPtr first = parse_expression();
      if (is_op(")")) {
        ++i_;
        return first;
      }
      auto tup = make(Expr::Kind::tuple, t.pos);
      tup->args.push_back(std::move(first));
      while (is_op(",")) {
        ++i_;
        if (is_op(")")) break;
        tup->args.push_back(parse_expression());
      }
      expect_op(")");
      return tup;
    }
    if (is_op("[")) {
      ++i_;
      auto l = make(Expr::Kind::list, t.pos);
      while (!is_op("]")) {
        l->args.push_back(parse_expression());
        if (!is_op(",")) break;
        ++i_;
      }
      expect_op("]");
      return l;
    }
    if (is_op("{")) {
      ++i_;
      auto d = make(Expr::Kind::dict, t.pos);
      while (!is_op("}")) {
        d->args.push_back(parse_expression());
        expect_op(":");
        d->args.push_back(parse_expression());
        if (!is_op(",")) break;
        ++i_;
      }
      expect_op("}");
      return d;
    }
    error(t.pos, "unexpected " + describe(t) + " in an expression");
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (is_op("*") || is_op("**")) error(peek().pos, "*args and **kwargs in calls are not supported");
      if (peek().type == Tok::name && is_op("=", 1)) {
        std::string k = next().text;
        ++i_;
        e.kwargs.emplace_back(std::move(k), parse_expression());
      } else {
        e.args.push_back(parse_expression());
      }
      if (!is_op(",")) break;
      ++i_;
    }
    expect_op(")");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(".")) {
        const Pos p = next().pos;
        auto a = make(Expr::Kind::attr, p);
        if (peek().type == Tok::integer) {
          a->kind = Expr::Kind::item;
          auto idx = make(Expr::Kind::literal, peek().pos);
          idx->value = Value(static_cast<int64_t>(std::stoll(next().text)));
          a->args.push_back(std::move(e));
          a->args.push_back(std::move(idx));
        } else {
          a->name = expect_name();
          a->args.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (is_op("[")) {
        const Pos p = next().pos;
        ExprPtr parts[3];
        bool slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!is_op(":") && !is_op("]")) parts[k] = parse_expression();
          if (k < 2 && is_op(":")) {
            ++i_;
            slice = true;
          } else {
            break;
          }
        }
        expect_op("]");
        auto s = make(slice ? Expr::Kind::slice : Expr::Kind::item, p);
        s->args.push_back(std::move(e));
        if (slice) {
          for (auto& part : parts) s->args.push_back(std::move(part));
        } else {
          if (!parts[0]) error(p, "empty subscript");
          s->args.push_back(std::move(parts[0]));
        }
        e = std::move(s);
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::call, e->pos);  // errors point at the callee
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_filters(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        const Pos p = next().pos;
        auto f = make(Expr::Kind::filter, p);
        f->name = expect_name();
        while (is_op(".")) {  // dotted filter names do not exist in the filters supported
          error(peek().pos, "unsupported filter name");
        }
        f->args.push_back(std::move(e));
        if (is_op("(")) parse_call_args(*f);
        e = std::move(f);
      } else if (is_name("is")) {
        const Pos p = next().pos;
        auto t = make(Expr::Kind::test, p);
        if (is_name("not")) {
          ++i_;
          t->negated = true;
        }
        // Test names include keywords: "is none", "is true", "is in".
        if (peek().type != Tok::name && !(peek().type == Tok::op && (peek().text == "==" || peek().text == "!=" ||
                                                                     peek().text == "<" || peek().text == ">")))
          error(peek().pos, "expected a test name after 'is'");
        t->name = next().text;
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          parse_call_args(*t);
        } else if (peek().type == Tok::string || peek().type == Tok::integer || peek().type == Tok::real ||
                   (peek().type == Tok::name && !is_name("and") && !is_name("or") && !is_name("if") &&
                    !is_name("else") && !is_name("is") && !is_name("in") && !is_name("not"))) {
          // "is divisibleby 3", "is sameas none": one argument without parentheses.
          t->args.push_back(parse_primary());
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  const std::string& name_;
};

}  // namespace

// ---- renderer -------------------------------------------------------------------------------

struct Template::Impl {
  std::string name;
  Body body;
  bool has_generation = false;
};

namespace {

struct BreakSignal {};
struct ContinueSignal {};

// raise_exception(message): the template's own error, passed on with the place it was raised.
struct RaisedError : Error {
  RaisedError(const std::string& what, bool located) : Error(what), located(located) {}
  bool located;
};

class Renderer {
 public:
  Renderer(const Template::Impl& t, const Dict& context) : t_(t) {
    scopes_.emplace_back();
    for (const auto& [k, v] : globals().items) scopes_.back()[k] = v;
    for (const auto& [k, v] : context.items) scopes_.back()[k] = v;
  }

  Rendered run() {
    exec(t_.body, out_.text);
    return std::move(out_);
  }

 private:
  [[noreturn]] void error(Pos p, const std::string& what) const { fail(t_.name, ":", p.line, ":", p.col, ": ", what); }

  static const Dict& globals();

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      const auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    return Value();
  }

  void exec(const Body& body, std::string& out) {
    for (const auto& n : body) exec(*n, out);
  }

  void exec(const Node& n, std::string& out) {
    switch (n.kind) {
      case Node::Kind::text: out += n.text; return;
      case Node::Kind::output: out += eval(*n.expr).to_string(); return;
      case Node::Kind::if_:
        for (const auto& [cond, body] : n.branches) {
          if (!cond || eval(*cond).truthy()) {
            exec(body, out);
            return;
          }
        }
        return;
      case Node::Kind::for_: exec_for(n, out); return;
      case Node::Kind::set: {
        Value v = eval(*n.expr);
        assign(n, std::move(v));
        return;
      }
      case Node::Kind::set_block: {
        std::string s;
        exec(n.body, s);
        scopes_.back()[n.targets[0]] = Value(std::move(s));
        return;
      }
      case Node::Kind::generation: {
        if (&out != &out_.text) error(n.pos, "{% generation %} inside a {% set %} block or macro is not supported");
        const size_t b = out.size();
        exec(n.body, out);
        out_.generation.emplace_back(b, out.size());
        return;
      }
      case Node::Kind::break_:
        if (loop_depth_ == 0) error(n.pos, "{% break %} outside a for loop");
        throw BreakSignal{};
      case Node::Kind::continue_:
        if (loop_depth_ == 0) error(n.pos, "{% continue %} outside a for loop");
        throw ContinueSignal{};
      case Node::Kind::macro: define_macro(n); return;
    }
  }

  void assign(const Node& n, Value v) {
    if (n.attr_target) {
      const Value ns = lookup(n.targets[0]);
      if (!ns.is_namespace())
        error(n.pos, "cannot assign attribute '" + n.targets[1] + "' of '" + n.targets[0] + "', which is a " +
                         ns.type_name() + ", not a namespace()");
      ns.mutable_dict().set(n.targets[1], std::move(v));
      return;
    }
    if (n.targets.size() == 1) {
      scopes_.back()[n.targets[0]] = std::move(v);
      return;
    }
    const List items = iterate(v, n.pos);
    if (items.size() != n.targets.size())
      error(n.pos, "cannot unpack " + std::to_string(items.size()) + " values into " + std::to_string(n.targets.size()) + " names");
    for (size_t k = 0; k < items.size(); ++k) scopes_.back()[n.targets[k]] = items[k];
  }

  void exec_for(const Node& n, std::string& out) {
    List items = iterate(eval(*n.expr), n.expr->pos);
    auto bind = [&](const Value& item) {
      if (n.targets.size() == 1) {
        scopes_.back()[n.targets[0]] = item;
        return;
      }
      const List parts = iterate(item, n.pos);
      if (parts.size() != n.targets.size())
        error(n.pos, "cannot unpack " + std::to_string(parts.size()) + " values into " + std::to_string(n.targets.size()) +
                         " loop variables");
      for (size_t k = 0; k < parts.size(); ++k) scopes_.back()[n.targets[k]] = parts[k];
    };
    if (n.filter) {  // the filter sees the loop variable but not loop.*
      List kept;
      scopes_.emplace_back();
      for (const Value& item : items) {
        bind(item);
        if (eval(*n.filter).truthy()) kept.push_back(item);
      }
      scopes_.pop_back();
      items = std::move(kept);
    }
    if (items.empty()) {
      exec(n.else_body, out);
      return;
    }
    scopes_.emplace_back();
    ++loop_depth_;
    const auto len = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < len; ++k) {
      Dict loop;
      loop.items = {{"index", Value(k + 1)},
                    {"index0", Value(k)},
                    {"first", Value(k == 0)},
                    {"last", Value(k == len - 1)},
                    {"length", Value(len)},
                    {"revindex", Value(len - k)},
                    {"revindex0", Value(len - k - 1)},
                    {"previtem", k > 0 ? items[k - 1] : Value()},
                    {"nextitem", k + 1 < len ? items[k + 1] : Value()}};
      scopes_.back()["loop"] = Value(std::move(loop));
      bind(items[k]);
      try {
        exec(n.body, out);
      } catch (const BreakSignal&) {
        break;
      } catch (const ContinueSignal&) {
        continue;
      }
    }
    --loop_depth_;
    scopes_.pop_back();
  }

  void define_macro(const Node& n) {
    const Node* node = &n;
    Value f = Value::function([this, node](Args& a) -> Value {
      scopes_.emplace_back();
      const int saved_depth = loop_depth_;
      loop_depth_ = 0;
      for (size_t k = 0; k < node->params.size(); ++k) {
        Value v = a.get(k, node->params[k].first);
        if (v.is_undefined() && node->params[k].second) v = eval(*node->params[k].second);
        scopes_.back()[node->params[k].first] = v;
      }
      std::string s;
      exec(node->body, s);
      loop_depth_ = saved_depth;
      scopes_.pop_back();
      return Value(std::move(s));
    });
    scopes_.back()[n.targets[0]] = std::move(f);
  }

  List iterate(const Value& v, Pos p) const {
    switch (v.kind()) {
      case Value::Kind::undefined: return {};
      case Value::Kind::list: return v.list();
      case Value::Kind::dict: {
        List keys;
        for (const auto& [k, _] : v.dict().items) keys.push_back(Value(k));
        return keys;
      }
      case Value::Kind::string: {
        List chars;
        for (auto cp : code_points(v.str())) chars.push_back(Value(std::string(cp)));
        return chars;
      }
      default: error(p, std::string("a value of type ") + v.type_name() + " is not iterable");
    }
  }

  // ---- expressions ----

  Value eval(const Expr& e) {
    using K = Expr::Kind;
    switch (e.kind) {
      case K::literal: return e.value;
      case K::name: return lookup(e.name);
      case K::list:
      case K::tuple: {
        List l;
        for (const auto& a : e.args) l.push_back(eval(*a));
        return Value(std::move(l));
      }
      case K::dict: {
        Dict d;
        for (size_t k = 0; k < e.args.size(); k += 2) {
          const Value key = eval(*e.args[k]);
          if (!key.is_string()) error(e.args[k]->pos, "dict keys must be strings here");
          d.set(key.str(), eval(*e.args[k + 1]));
        }
        return Value(std::move(d));
      }
      case K::attr: return get_attr(eval(*e.args[0]), e.name, e);
      case K::item: return get_item(eval(*e.args[0]), eval(*e.args[1]), e);
      case K::slice: return slice(e);
      case K::call: return located(e, [&] { return call(e); });
      case K::filter: return located(e, [&] { return filter(e); });
      case K::test:
        return located(e, [&] {
          const bool r = test(e);
          return Value(e.negated ? !r : r);
        });
      case K::unary: {
        const Value v = eval(*e.args[0]);
        if (e.name == "not") return Value(!v.truthy());
        if (v.kind() == Value::Kind::integer) return Value(e.name == "-" ? -v.integer() : v.integer());
        if (v.kind() == Value::Kind::real) return Value(e.name == "-" ? -v.real() : v.real());
        error(e.pos, "bad operand type for unary " + e.name + ": " + v.type_name());
      }
      case K::binary: return binary(e);
      case K::cond: {
        if (eval(*e.args[1]).truthy()) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : Value();
      }
    }
    error(e.pos, "internal: unknown expression");
  }

  // Runs fn; an error from a method, filter or builtin without a place gets the place of `e`.
  template <class Fn>
  Value located(const Expr& e, Fn fn) {
    try {
      return fn();
    } catch (const RaisedError& r) {
      if (r.located) throw;
      throw RaisedError(t_.name + ":" + std::to_string(e.pos.line) + ":" + std::to_string(e.pos.col) +
                            ": the chat template raised an exception: " + r.what(),
                        true);
    } catch (const BreakSignal&) {
      throw;
    } catch (const Error& err) {
      const std::string what = err.what();
      if (what.starts_with(t_.name + ":")) throw;
      error(e.pos, what);
    }
  }

  // Jinja's getattr: an attribute (a method, for str and dict), else the item.
  Value get_attr(const Value& obj, const std::string& name, const Expr& e) {
    if (obj.is_undefined()) error(e.pos, "'" + describe_expr(*e.args[0]) + "' is undefined (reading ." + name + ")");
    if (obj.is_none()) error(e.pos, "'None' has no attribute '" + name + "'");
    if (obj.is_dict()) {
      if (!obj.is_namespace()) {
        if (Value m = method(obj, name); !m.is_undefined()) return m;
      }
      if (const Value* v = obj.dict().find(name)) return *v;
      return Value();
    }
    if (Value m = method(obj, name); !m.is_undefined()) return m;
    return Value();
  }

  Value get_item(const Value& obj, const Value& key, const Expr& e) {
    if (obj.is_undefined()) error(e.pos, "'" + describe_expr(*e.args[0]) + "' is undefined (indexing it)");
    if (obj.is_dict()) {
      if (!key.is_string()) return Value();
      if (const Value* v = obj.dict().find(key.str())) return *v;
      return method(obj, key.str());
    }
    if (obj.is_list() || obj.is_string()) {
      if (key.kind() != Value::Kind::integer) {
        if (key.is_string()) return method(obj, key.str());
        error(e.pos, std::string("indices must be integers, not ") + key.type_name());
      }
      if (obj.is_list()) {
        const auto n = static_cast<int64_t>(obj.list().size());
        int64_t i = key.integer() < 0 ? key.integer() + n : key.integer();
        if (i < 0 || i >= n) return Value();  // jinja2: undefined, not IndexError
        return obj.list()[static_cast<size_t>(i)];
      }
      const auto cps = code_points(obj.str());
      const auto n = static_cast<int64_t>(cps.size());
      int64_t i = key.integer() < 0 ? key.integer() + n : key.integer();
      if (i < 0 || i >= n) return Value();
      return Value(std::string(cps[static_cast<size_t>(i)]));
    }
    error(e.pos, std::string("a value of type ") + obj.type_name() + " cannot be indexed");
  }

  static std::string describe_expr(const Expr& e) {
    if (e.kind == Expr::Kind::name) return e.name;
    if (e.kind == Expr::Kind::attr) return describe_expr(*e.args[0]) + "." + e.name;
    return "value";
  }

  Value slice(const Expr& e) {
    const Value obj = eval(*e.args[0]);
    auto opt = [&](size_t k) -> std::optional<int64_t> {
      if (!e.args[k]) return std::nullopt;
      const Value v = eval(*e.args[k]);
      if (v.is_none()) return std::nullopt;
      if (v.kind() != Value::Kind::integer) error(e.args[k]->pos, "slice indices must be integers");
      return v.integer();
    };
    const auto start = opt(1), stop = opt(2), step_opt = opt(3);
    const int64_t step = step_opt.value_or(1);
    if (step == 0) error(e.pos, "slice step cannot be zero");
    std::vector<Value> items;
    std::vector<std::string_view> cps;
    int64_t n;
    if (obj.is_list()) {
      n = static_cast<int64_t>(obj.list().size());
    } else if (obj.is_string()) {
      cps = code_points(obj.str());
      n = static_cast<int64_t>(cps.size());
    } else {
      error(e.pos, std::string("a value of type ") + obj.type_name() + " cannot be sliced");
    }
    // Python's slice.indices.
    auto clamp = [&](std::optional<int64_t> v, int64_t def) {
      if (!v) return def;
      int64_t x = *v < 0 ? *v + n : *v;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    const int64_t b = clamp(start, step > 0 ? 0 : n - 1), en = clamp(stop, step > 0 ? n : -1);
    List out;
    std::string s;
    for (int64_t i = b; step > 0 ? i < en : i > en; i += step) {
      if (obj.is_list()) out.push_back(obj.list()[static_cast<size_t>(i)]);
      else s += cps[static_cast<size_t>(i)];
    }
    return obj.is_list() ? Value(std::move(out)) : Value(std::move(s));
  }

  Args eval_args(const Expr& e, size_t first) {
    Args a;
    for (size_t k = first; k < e.args.size(); ++k) a.positional.push_back(eval(*e.args[k]));
    for (const auto& [k, v] : e.kwargs) a.keyword.emplace_back(k, eval(*v));
    return a;
  }

  Value call(const Expr& e) {
    const Value f = eval(*e.args[0]);
    if (f.kind() != Value::Kind::function) {
      if (f.is_undefined()) error(e.pos, "'" + describe_expr(*e.args[0]) + "' is undefined (called as a function)");
      error(e.pos, std::string("a value of type ") + f.type_name() + " is not callable");
    }
    Args a = eval_args(e, 1);
    return f.func()(a);
  }

  // Methods of str, dict and list that templates call; undefined when there is none.
  Value method(const Value& obj, const std::string& name) {
    if (obj.is_string()) {
      const std::string s = obj.str();
      auto m = [&](auto fn) { return Value::function([s, fn](Args& a) -> Value { return fn(s, a); }); };
      if (name == "strip") return m([](const std::string& s, Args& a) { return Value(strip(s, true, true, a.get(0, "chars"))); });
      if (name == "lstrip") return m([](const std::string& s, Args& a) { return Value(strip(s, true, false, a.get(0, "chars"))); });
      if (name == "rstrip") return m([](const std::string& s, Args& a) { return Value(strip(s, false, true, a.get(0, "chars"))); });
      if (name == "startswith" || name == "endswith") {
        const bool start = name == "startswith";
        return m([start](const std::string& s, Args& a) {
          const Value p = a.get(0, "prefix");
          auto one = [&](const Value& x) {
            IFT_CHECK(x.is_string(), (start ? "startswith" : "endswith"), ": the argument must be a string, not ", x.type_name());
            return start ? s.starts_with(x.str()) : s.ends_with(x.str());
          };
          if (p.is_list()) {
            for (const Value& x : p.list())
              if (one(x)) return Value(true);
            return Value(false);
          }
          return Value(one(p));
        });
      }
      if (name == "upper" || name == "lower" || name == "title" || name == "capitalize")
        return m([name](const std::string& s, Args&) { return Value(change_case(s, name)); });
      if (name == "split")
        return m([](const std::string& s, Args& a) { return split(s, a.get(0, "sep"), a.get(1, "maxsplit")); });
      if (name == "splitlines")
        return m([](const std::string& s, Args&) {
          List out;
          size_t b = 0;
          for (size_t i = 0; i < s.size(); ++i) {
            if (s[i] == '\n' || s[i] == '\r') {
              out.push_back(Value(s.substr(b, i - b)));
              if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
              b = i + 1;
            }
          }
          if (b < s.size()) out.push_back(Value(s.substr(b)));
          return Value(std::move(out));
        });
      if (name == "replace")
        return m([](const std::string& s, Args& a) {
          return Value(replace(s, a.get(0, "old"), a.get(1, "new"), a.get(2, "count")));
        });
      if (name == "find" || name == "count")
        return m([name](const std::string& s, Args& a) {
          const Value sub = a.get(0, "sub");
          IFT_CHECK(sub.is_string(), name, ": the argument must be a string");
          if (name == "find") {
            const size_t p = s.find(sub.str());
            return Value(p == std::string::npos ? int64_t{-1} : static_cast<int64_t>(code_points(s.substr(0, p)).size()));
          }
          int64_t c = 0;
          if (sub.str().empty()) return Value(static_cast<int64_t>(code_points(s).size()) + 1);
          for (size_t p = s.find(sub.str()); p != std::string::npos; p = s.find(sub.str(), p + sub.str().size())) ++c;
          return Value(c);
        });
      if (name == "join")
        return m([](const std::string& s, Args& a) {
          std::string out;
          const Value l = a.get(0, "iterable");
          IFT_CHECK(l.is_list(), "join: the argument must be a list");
          for (size_t k = 0; k < l.list().size(); ++k) {
            IFT_CHECK(l.list()[k].is_string(), "join: item ", k, " is a ", l.list()[k].type_name(), ", not a str");
            out += (k ? s : "") + l.list()[k].str();
          }
          return Value(std::move(out));
        });
      return Value();
    }
    if (obj.is_dict()) {
      const Value d = obj;
      auto m = [&](auto fn) { return Value::function([d, fn](Args& a) -> Value { return fn(d.dict(), a); }); };
      if (name == "items")
        return m([](const Dict& d, Args&) {
          List out;
          for (const auto& [k, v] : d.items) out.push_back(Value(List{Value(k), v}));
          return Value(std::move(out));
        });
      if (name == "keys")
        return m([](const Dict& d, Args&) {
          List out;
          for (const auto& [k, v] : d.items) out.push_back(Value(k));
          return Value(std::move(out));
        });
      if (name == "values")
        return m([](const Dict& d, Args&) {
          List out;
          for (const auto& [k, v] : d.items) out.push_back(v);
          return Value(std::move(out));
        });
      if (name == "get")
        return m([](const Dict& d, Args& a) {
          const Value k = a.get(0, "key");
          const Value* v = k.is_string() ? d.find(k.str()) : nullptr;
          if (v) return *v;
          const Value def = a.get(1, "default");
          return def.is_undefined() ? Value::none() : def;
        });
      return Value();
    }
    return Value();
  }

  static std::string change_case(const std::string& s, const std::string& how) {
    for (unsigned char c : s)
      IFT_CHECK(c < 0x80, how, "() of non-ASCII text is not supported (Python's Unicode case mapping is not built in)");
    std::string out = s;
    bool word_start = true;
    for (size_t i = 0; i < out.size(); ++i) {
      const char c = out[i];
      if (how == "upper") out[i] = static_cast<char>(std::toupper(c));
      else if (how == "lower") out[i] = static_cast<char>(std::tolower(c));
      else if (how == "capitalize") out[i] = static_cast<char>(i == 0 ? std::toupper(c) : std::tolower(c));
      else {  // title: upper after a non-letter, lower after a letter
        out[i] = static_cast<char>(word_start ? std::toupper(c) : std::tolower(c));
        word_start = !std::isalpha(static_cast<unsigned char>(c));
      }
    }
    return out;
  }

  static Value split(const std::string& s, const Value& sep, const Value& maxsplit) {
    int64_t max = maxsplit.kind() == Value::Kind::integer ? maxsplit.integer() : -1;
    List out;
    if (sep.is_string()) {
      IFT_CHECK(!sep.str().empty(), "split: empty separator");
      size_t b = 0;
      for (size_t p = s.find(sep.str()); p != std::string::npos && max != 0; p = s.find(sep.str(), b), --max) {
        out.push_back(Value(s.substr(b, p - b)));
        b = p + sep.str().size();
      }
      out.push_back(Value(s.substr(b)));
      return Value(std::move(out));
    }
    size_t i = 0;
    while (true) {
      while (i < s.size() && ascii_space(s[i])) ++i;
      if (i >= s.size()) break;
      if (max == 0) {
        out.push_back(Value(rstrip_ws(s.substr(i))));
        break;
      }
      size_t e = i;
      while (e < s.size() && !ascii_space(s[e])) ++e;
      out.push_back(Value(s.substr(i, e - i)));
      i = e;
      --max;
    }
    return Value(std::move(out));
  }

  static std::string replace(const std::string& s, const Value& old, const Value& nw, const Value& count) {
    IFT_CHECK(old.is_string() && nw.is_string(), "replace: the arguments must be strings");
    int64_t n = count.kind() == Value::Kind::integer ? count.integer() : -1;
    if (old.str().empty()) {
      std::string out;
      for (auto cp : code_points(s)) {
        if (n != 0) {
          out += nw.str();
          --n;
        }
        out += cp;
      }
      if (n != 0) out += nw.str();
      return out;
    }
    std::string out;
    size_t b = 0;
    for (size_t p = s.find(old.str()); p != std::string::npos && n != 0; p = s.find(old.str(), b), --n) {
      out += s.substr(b, p - b) + nw.str();
      b = p + old.str().size();
    }
    return out + s.substr(b);
  }

  Value binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Value a = eval(*e.args[0]);
      return a.truthy() ? eval(*e.args[1]) : a;
    }
    if (op == "or") {
      Value a = eval(*e.args[0]);
      return a.truthy() ? a : eval(*e.args[1]);
    }
    const Value a = eval(*e.args[0]), b = eval(*e.args[1]);
    if (op == "~") return Value(a.to_string() + b.to_string());
    if (op == "==") return Value(a == b);
    if (op == "!=") return Value(!(a == b));
    if (op == "in" || op == "not in") {
      const bool r = contains(b, a, e);
      return Value(op == "in" ? r : !r);
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      const int c = compare(a, b, e);
      return Value(op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0);
    }
    using K = Value::Kind;
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
      if (a.is_list() && b.is_list()) {
        List l = a.list();
        l.insert(l.end(), b.list().begin(), b.list().end());
        return Value(std::move(l));
      }
    }
    if (op == "*" && ((a.is_string() && b.kind() == K::integer) || (b.is_string() && a.kind() == K::integer))) {
      const std::string& s = a.is_string() ? a.str() : b.str();
      const int64_t n = a.is_string() ? b.integer() : a.integer();
      std::string out;
      for (int64_t k = 0; k < n; ++k) out += s;
      return Value(std::move(out));
    }
    auto num = [&](const Value& v) -> bool { return v.is_number() || v.kind() == K::boolean; };
    if (!num(a) || !num(b))
      error(e.pos, "unsupported operand types for " + op + ": '" + a.type_name() + "' and '" + b.type_name() + "'");
    auto as_int = [](const Value& v) { return v.kind() == K::boolean ? (v.boolean() ? 1 : 0) : v.integer(); };
    const bool ints = a.kind() != K::real && b.kind() != K::real;
    const double x = a.kind() == K::boolean ? as_int(a) : a.real(), y = b.kind() == K::boolean ? as_int(b) : b.real();
    if (op == "/") {
      if (y == 0) error(e.pos, "division by zero");
      return Value(x / y);
    }
    if (op == "//" || op == "%") {
      if (y == 0) error(e.pos, "integer division or modulo by zero");
      if (ints) {
        const int64_t i = as_int(a), j = as_int(b);
        int64_t q = i / j, r = i % j;
        if (r != 0 && ((r < 0) != (j < 0))) {
          --q;
          r += j;
        }
        return Value(op == "//" ? q : r);
      }
      const double q = std::floor(x / y);
      return Value(op == "//" ? q : x - q * y);
    }
    if (op == "**") {
      if (ints && as_int(b) >= 0) {
        int64_t r = 1;
        for (int64_t k = 0; k < as_int(b); ++k) r *= as_int(a);
        return Value(r);
      }
      return Value(std::pow(x, y));
    }
    if (ints) {
      const int64_t i = as_int(a), j = as_int(b);
      if (op == "+") return Value(i + j);
      if (op == "-") return Value(i - j);
      if (op == "*") return Value(i * j);
    } else {
      if (op == "+") return Value(x + y);
      if (op == "-") return Value(x - y);
      if (op == "*") return Value(x * y);
    }
    error(e.pos, "unsupported operator " + op);
  }

  bool contains(const Value& container, const Value& item, const Expr& e) const {
    if (container.is_string()) {
      if (!item.is_string()) error(e.pos, std::string("'in <string>' requires a string, not ") + item.type_name());
      return container.str().find(item.str()) != std::string::npos;
    }
    if (container.is_list()) return std::find(container.list().begin(), container.list().end(), item) != container.list().end();
    if (container.is_dict()) return item.is_string() && container.dict().find(item.str()) != nullptr;
    if (container.is_undefined()) error(e.pos, "'in' on an undefined value");
    error(e.pos, std::string("argument of type ") + container.type_name() + " is not iterable");
  }

  int compare(const Value& a, const Value& b, const Expr& e) const {
    if ((a.is_number() || a.kind() == Value::Kind::boolean) && (b.is_number() || b.kind() == Value::Kind::boolean)) {
      auto d = [](const Value& v) { return v.kind() == Value::Kind::boolean ? (v.boolean() ? 1.0 : 0.0) : v.real(); };
      if (a.kind() == Value::Kind::integer && b.kind() == Value::Kind::integer)
        return a.integer() < b.integer() ? -1 : a.integer() > b.integer() ? 1 : 0;
      return d(a) < d(b) ? -1 : d(a) > d(b) ? 1 : 0;
    }
    if (a.is_string() && b.is_string()) return a.str() < b.str() ? -1 : a.str() > b.str() ? 1 : 0;
    if (a.is_list() && b.is_list()) {
      for (size_t k = 0; k < std::min(a.list().size(), b.list().size()); ++k) {
        if (const int c = compare(a.list()[k], b.list()[k], e); c != 0) return c;
      }
      return a.list().size() < b.list().size() ? -1 : a.list().size() > b.list().size() ? 1 : 0;
    }
    error(e.pos, std::string("'<' not supported between '") + a.type_name() + "' and '" + b.type_name() + "'");
  }

  bool test(const Expr& e) {
    const std::string& n = e.name;
    const Value v = eval(*e.args[0]);
    Args a = eval_args(e, 1);
    using K = Value::Kind;
    if (n == "defined") return !v.is_undefined();
    if (n == "undefined") return v.is_undefined();
    if (n == "none") return v.is_none();
    if (n == "string") return v.is_string();
    if (n == "number") return v.is_number();
    if (n == "integer") return v.kind() == K::integer;
    if (n == "float") return v.kind() == K::real;
    if (n == "boolean") return v.kind() == K::boolean;
    if (n == "true") return v.kind() == K::boolean && v.boolean();
    if (n == "false") return v.kind() == K::boolean && !v.boolean();
    if (n == "mapping") return v.is_dict();
    if (n == "iterable") return v.is_list() || v.is_dict() || v.is_string();
    if (n == "sequence") return v.is_list() || v.is_dict() || v.is_string();
    if (n == "callable") return v.kind() == K::function;
    if (n == "lower" || n == "upper") {
      if (!v.is_string()) return false;
      return v.str() == change_case(v.str(), n);
    }
    auto arg = [&]() {
      if (a.positional.empty()) error(e.pos, "test '" + n + "' needs an argument");
      return a.positional[0];
    };
    if (n == "even" || n == "odd" || n == "divisibleby") {
      if (v.kind() != K::integer) error(e.pos, "test '" + n + "' needs an integer, not " + v.type_name());
      if (n == "divisibleby") {
        const Value d = arg();
        if (d.kind() != K::integer || d.integer() == 0) error(e.pos, "divisibleby needs a non-zero integer");
        return v.integer() % d.integer() == 0;
      }
      return (((v.integer() % 2) + 2) % 2 == 0) == (n == "even");
    }
    if (n == "eq" || n == "equalto" || n == "==") return v == arg();
    if (n == "ne" || n == "!=") return !(v == arg());
    if (n == "lt" || n == "lessthan" || n == "<") return compare(v, arg(), e) < 0;
    if (n == "gt" || n == "greaterthan" || n == ">") return compare(v, arg(), e) > 0;
    if (n == "le") return compare(v, arg(), e) <= 0;
    if (n == "ge") return compare(v, arg(), e) >= 0;
    if (n == "in") return contains(arg(), v, e);
    if (n == "sameas") return v == arg();
    error(e.pos, "unsupported test '" + n + "'");
  }

  // A test by name on a value, for select/reject/selectattr/rejectattr.
  bool run_test(const std::string& name, const Value& v, const std::vector<Value>& args, const Expr& e) {
    Expr t;
    t.kind = Expr::Kind::test;
    t.pos = e.pos;
    t.name = name;
    auto lit = [&](const Value& x) {
      auto l = std::make_unique<Expr>();
      l->kind = Expr::Kind::literal;
      l->pos = e.pos;
      l->value = x;
      return l;
    };
    t.args.push_back(lit(v));
    for (const Value& x : args) t.args.push_back(lit(x));
    return test(t);
  }

  Value attribute_path(const Value& v, const std::string& path, const Expr& e) {
    Value cur = v;
    size_t b = 0;
    while (true) {
      const size_t dot = path.find('.', b);
      const std::string part = path.substr(b, dot == std::string::npos ? std::string::npos : dot - b);
      if (cur.is_undefined()) return cur;
      if (!part.empty() && std::all_of(part.begin(), part.end(), ::isdigit) && cur.is_list()) {
        const size_t i = std::stoul(part);
        cur = i < cur.list().size() ? cur.list()[i] : Value();
      } else {
        cur = cur.is_dict() ? (cur.dict().find(part) ? *cur.dict().find(part) : Value()) : get_attr(cur, part, e);
      }
      if (dot == std::string::npos) return cur;
      b = dot + 1;
    }
  }

  Value filter(const Expr& e) {
    const std::string& n = e.name;
    const Value v = eval(*e.args[0]);
    Args a = eval_args(e, 1);
    using K = Value::Kind;
    auto need_string = [&](const char* what) {
      if (!v.is_string()) error(e.pos, std::string(what) + " needs a string, got " + v.type_name());
    };
    if (n == "trim") {
      need_string("trim");
      return Value(strip(v.str(), true, true, a.get(0, "chars")));
    }
    if (n == "tojson") {
      // transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
      for (const auto& [k, _] : a.keyword)
        if (k != "indent" && k != "sort_keys" && k != "ensure_ascii")
          error(e.pos, "tojson: argument '" + k + "' is not supported");
      if (a.positional.size() > 2 || !a.get(2, "separators").is_undefined())
        error(e.pos, "tojson: separators are not supported");
      const Value ascii = a.get(0, "ensure_ascii"), indent = a.get(1, "indent"), sort = a.get(3, "sort_keys");
      if (ascii.truthy()) error(e.pos, "tojson(ensure_ascii=true) is not supported");
      try {
        return Value(to_json(v, indent.kind() == K::integer ? static_cast<int>(indent.integer()) : -1, sort.truthy()));
      } catch (const Error& err) {
        error(e.pos, err.what());
      }
    }
    if (n == "length" || n == "count") {
      if (v.is_string()) return Value(static_cast<int64_t>(code_points(v.str()).size()));
      if (v.is_list()) return Value(static_cast<int64_t>(v.list().size()));
      if (v.is_dict()) return Value(static_cast<int64_t>(v.dict().items.size()));
      if (v.is_undefined()) return Value(int64_t{0});
      error(e.pos, std::string("object of type ") + v.type_name() + " has no length");
    }
    if (n == "upper" || n == "lower" || n == "title" || n == "capitalize") {
      need_string(n.c_str());
      return Value(change_case(v.str(), n));
    }
    if (n == "default" || n == "d") {
      const Value def = a.get(0, "default_value");
      const bool boolean = a.get(1, "boolean").truthy();
      if (v.is_undefined() || (boolean && !v.truthy())) return def.is_undefined() ? Value("") : def;
      return v;
    }
    if (n == "first" || n == "last") {
      const List items = iterate(v, e.pos);
      if (items.empty()) return Value();
      return n == "first" ? items.front() : items.back();
    }
    if (n == "join") {
      const Value sep = a.get(0, "d");
      const Value attr = a.get(1, "attribute");
      std::string out;
      const List items = iterate(v, e.pos);
      for (size_t k = 0; k < items.size(); ++k) {
        const Value item = attr.is_string() ? attribute_path(items[k], attr.str(), e) : items[k];
        out += (k ? sep.to_string() : "") + item.to_string();
      }
      return Value(std::move(out));
    }
    if (n == "replace") {
      need_string("replace");
      return Value(replace(v.str(), a.get(0, "old"), a.get(1, "new"), a.get(2, "count")));
    }
    if (n == "string") return Value(v.to_string());
    if (n == "safe") return v;
    if (n == "int") {
      if (v.kind() == K::integer) return v;
      if (v.kind() == K::real) return Value(static_cast<int64_t>(v.real()));
      if (v.kind() == K::boolean) return Value(static_cast<int64_t>(v.boolean()));
      if (v.is_string()) {
        try {
          return Value(static_cast<int64_t>(std::stoll(strip(v.str(), true, true))));
        } catch (const std::exception&) {
        }
      }
      const Value def = a.get(0, "default");
      return def.is_undefined() ? Value(int64_t{0}) : def;
    }
    if (n == "float") {
      if (v.is_number()) return Value(v.real());
      if (v.is_string()) {
        try {
          return Value(std::stod(v.str()));
        } catch (const std::exception&) {
        }
      }
      return Value(0.0);
    }
    if (n == "list") return Value(iterate(v, e.pos));
    if (n == "items") {
      if (v.is_undefined()) return Value(List{});
      if (!v.is_dict()) error(e.pos, "items needs a mapping");
      List out;
      for (const auto& [k, x] : v.dict().items) out.push_back(Value(List{Value(k), x}));
      return Value(std::move(out));
    }
    if (n == "reverse") {
      if (v.is_string()) {
        auto cps = code_points(v.str());
        std::string out;
        for (auto it = cps.rbegin(); it != cps.rend(); ++it) out += *it;
        return Value(std::move(out));
      }
      List l = iterate(v, e.pos);
      std::reverse(l.begin(), l.end());
      return Value(std::move(l));
    }
    if (n == "unique") {
      List out;
      for (const Value& x : iterate(v, e.pos))
        if (std::find(out.begin(), out.end(), x) == out.end()) out.push_back(x);
      return Value(std::move(out));
    }
    if (n == "abs") {
      if (v.kind() == K::integer) return Value(v.integer() < 0 ? -v.integer() : v.integer());
      if (v.kind() == K::real) return Value(std::fabs(v.real()));
      error(e.pos, "abs needs a number");
    }
    if (n == "selectattr" || n == "rejectattr" || n == "select" || n == "reject") {
      const bool attr = n.ends_with("attr");
      const bool keep_if = n.starts_with("select");
      size_t k = 0;
      std::string path;
      if (attr) {
        if (a.positional.empty() || !a.positional[0].is_string()) error(e.pos, n + " needs an attribute name");
        path = a.positional[k++].str();
      }
      std::string test_name;
      std::vector<Value> test_args;
      if (k < a.positional.size()) {
        if (!a.positional[k].is_string()) error(e.pos, n + ": the test name must be a string");
        test_name = a.positional[k++].str();
        test_args.assign(a.positional.begin() + static_cast<long>(k), a.positional.end());
      }
      List out;
      for (const Value& x : iterate(v, e.pos)) {
        const Value subject = attr ? attribute_path(x, path, e) : x;
        const bool r = test_name.empty() ? subject.truthy() : run_test(test_name, subject, test_args, e);
        if (r == keep_if) out.push_back(x);
      }
      return Value(std::move(out));
    }
    if (n == "map") {
      const Value attr = a.get(99, "attribute");
      List out;
      if (attr.is_string()) {
        const Value def = a.get(99, "default");
        for (const Value& x : iterate(v, e.pos)) {
          Value y = attribute_path(x, attr.str(), e);
          out.push_back(y.is_undefined() && !def.is_undefined() ? def : y);
        }
        return Value(std::move(out));
      }
      if (a.positional.empty() || !a.positional[0].is_string()) error(e.pos, "map needs attribute= or a filter name");
      for (const Value& x : iterate(v, e.pos)) out.push_back(apply_filter(a.positional[0].str(), x, e));
      return Value(std::move(out));
    }
    if (n == "indent") {
      need_string("indent");
      const Value width = a.get(0, "width");
      const std::string pad = width.is_string() ? width.str() : std::string(static_cast<size_t>(width.kind() == K::integer ? width.integer() : 4), ' ');
      const bool first = a.get(1, "first").truthy(), blank = a.get(2, "blank").truthy();
      std::string out;
      size_t b = 0;
      bool is_first = true;
      while (b <= v.str().size()) {
        const size_t nl = v.str().find('\n', b);
        const std::string line = v.str().substr(b, nl == std::string::npos ? std::string::npos : nl - b);
        if ((!is_first || first) && (blank || !line.empty())) out += pad;
        out += line;
        if (nl == std::string::npos) break;
        out += '\n';
        b = nl + 1;
        is_first = false;
      }
      return Value(std::move(out));
    }
    if (n == "wordcount") {
      need_string("wordcount");
      return Value(static_cast<int64_t>(split(v.str(), Value(), Value()).list().size()));
    }
    if (n == "sum") {
      Value total = a.get(1, "start");
      if (total.is_undefined()) total = Value(int64_t{0});
      for (const Value& x : iterate(v, e.pos)) {
        if (!x.is_number() || !total.is_number()) error(e.pos, "sum needs numbers");
        total = total.kind() == K::integer && x.kind() == K::integer ? Value(total.integer() + x.integer())
                                                                     : Value(total.real() + x.real());
      }
      return total;
    }
    if (n == "round") {
      if (!v.is_number()) error(e.pos, "round needs a number");
      const Value precision = a.get(0, "precision");
      const double p = std::pow(10.0, precision.kind() == K::integer ? static_cast<double>(precision.integer()) : 0.0);
      return Value(std::nearbyint(v.real() * p) / p);
    }
    error(e.pos, "unsupported filter '" + n + "'");
  }

  Value apply_filter(const std::string& name, const Value& v, const Expr& at) {
    Expr f;
    f.kind = Expr::Kind::filter;
    f.pos = at.pos;
    f.name = name;
    auto l = std::make_unique<Expr>();
    l->kind = Expr::Kind::literal;
    l->value = v;
    l->pos = at.pos;
    f.args.push_back(std::move(l));
    return filter(f);
  }

  const Template::Impl& t_;
  std::vector<std::map<std::string, Value>> scopes_;
  Rendered out_;
  int loop_depth_ = 0;
};

const Dict& Renderer::globals() {
  static const Dict g = [] {
    Dict d;
    // transformers' raise_exception raises TemplateError(message).
    d.set("raise_exception", Value::function([](Args& a) -> Value {
            throw RaisedError(a.get(0, "message").to_string(), false);
          }));
    d.set("namespace", Value::function([](Args& a) -> Value {
            Dict ns;
            for (const auto& [k, v] : a.keyword) ns.set(k, v);
            for (const Value& p : a.positional) {
              IFT_CHECK(p.is_dict(), "namespace(): positional arguments must be dicts");
              for (const auto& [k, v] : p.dict().items) ns.set(k, v);
            }
            return Value::namespace_object(std::move(ns));
          }));
    d.set("dict", Value::function([](Args& a) -> Value {
            Dict out;
            for (const auto& [k, v] : a.keyword) out.set(k, v);
            return Value(std::move(out));
          }));
    d.set("range", Value::function([](Args& a) -> Value {
            for (const Value& p : a.positional) IFT_CHECK(p.kind() == Value::Kind::integer, "range(): arguments must be integers");
            IFT_CHECK(!a.positional.empty() && a.positional.size() <= 3, "range() takes 1 to 3 arguments");
            int64_t start = 0, stop, step = 1;
            if (a.positional.size() == 1) {
              stop = a.positional[0].integer();
            } else {
              start = a.positional[0].integer();
              stop = a.positional[1].integer();
              if (a.positional.size() == 3) step = a.positional[2].integer();
            }
            IFT_CHECK(step != 0, "range(): step must not be zero");
            List out;
            for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(Value(i));
            return Value(std::move(out));
          }));
    // transformers: datetime.now().strftime(format), the local time of the machine that renders.
    d.set("strftime_now", Value::function([](Args& a) -> Value {
            const Value f = a.get(0, "format");
            IFT_CHECK(f.is_string(), "strftime_now(): the format must be a string");
            const std::time_t now = std::time(nullptr);
            std::tm tm{};
            localtime_r(&now, &tm);
            char buf[256];
            const size_t n = std::strftime(buf, sizeof buf, f.str().c_str(), &tm);
            return Value(std::string(buf, n));
          }));
    return d;
  }();
  return g;
}

}  // namespace

Template::Template(std::string_view source, std::string name) : impl_(std::make_unique<Impl>()) {
  impl_->name = std::move(name);
  Parser p(Lexer(source, impl_->name).run(), impl_->name);
  impl_->body = p.parse_template();
  impl_->has_generation = p.has_generation;
}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

Rendered Template::render(const Dict& context) const {
  Renderer r(*impl_, context);
  return r.run();
}
bool Template::has_generation() const { return impl_->has_generation; }
const std::string& Template::name() const { return impl_->name; }

}  // namespace ift::jinja
