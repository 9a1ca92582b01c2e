#include "data/jinja.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/base/error.h"
#include "tests/support.h"

using namespace ift;

namespace {

jinja::Dict context_from(const nlohmann::ordered_json& j) {
  const jinja::Value v = jinja::Value::from_json(j);
  REQUIRE(v.is_dict());
  return v.dict();
}

std::string render(const std::string& source, const nlohmann::ordered_json& context = nlohmann::ordered_json::object()) {
  return jinja::Template(source, "t.jinja").render(context_from(context)).text;
}

std::string error_of(const std::string& source, const nlohmann::ordered_json& context = nlohmann::ordered_json::object()) {
  try {
    render(source, context);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

// Every case of tools/golden/make_chat_templates.py's JINJA_CASES, rendered by transformers'
// compiled template (jinja2 with trim_blocks, lstrip_blocks, its tojson and raise_exception).
TEST_CASE("jinja: renders every case exactly as transformers' jinja environment", "[jinja]") {
  std::ifstream in(test::fixture("chat_templates/jinja_cases.json"));
  REQUIRE(in);
  const auto cases = nlohmann::ordered_json::parse(in)["cases"];
  REQUIRE(cases.size() >= 25);
  for (const auto& c : cases) {
    const std::string name = c["name"];
    INFO("case " << name << ": " << c["template"].get<std::string>());
    if (c.contains("error")) {
      const std::string e = error_of(c["template"], c["context"]);
      CHECK_THAT(e, Catch::Contains(c["error"].get<std::string>()));
    } else {
      CHECK(render(c["template"], c["context"]) == c["output"].get<std::string>());
    }
  }
}

TEST_CASE("jinja: {% generation %} records the byte span of what it rendered", "[jinja]") {
  const jinja::Template t(
      "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}!{% endgeneration %}"
      "{% else %}<{{ m.content }}>{% endif %}{% endfor %}",
      "gen");
  CHECK(t.has_generation());
  const auto r = t.render(context_from({{"messages",
                                         {{{"role", "user"}, {"content", "q"}},
                                          {{"role", "assistant"}, {"content", "aé"}},
                                          {{"role", "user"}, {"content", "q2"}},
                                          {{"role", "assistant"}, {"content", "b"}}}}}));
  CHECK(r.text == "<q>aé!<q2>b!");
  REQUIRE(r.generation.size() == 2);
  CHECK(r.text.substr(r.generation[0].first, r.generation[0].second - r.generation[0].first) == "aé!");
  CHECK(r.text.substr(r.generation[1].first, r.generation[1].second - r.generation[1].first) == "b!");
  CHECK_FALSE(jinja::Template("{{ 1 }}", "plain").has_generation());
}

TEST_CASE("jinja: unsupported constructs and bad syntax are errors at the template's line:column", "[jinja]") {
  // Parse errors.
  CHECK_THROWS_WITH(jinja::Template("ok\n  {% include 'x' %}", "a.jinja"),
                    Catch::Contains("a.jinja:2:6: unsupported tag 'include'"));
  CHECK_THROWS_WITH(jinja::Template("{% if x %}never closed", "b.jinja"), Catch::Contains("b.jinja:1:") &&
                                                                            Catch::Contains("endif"));
  CHECK_THROWS_WITH(jinja::Template("a\nb {{ 'x' ", "c.jinja"), Catch::Contains("c.jinja:2:3: {{ is never closed"));
  CHECK_THROWS_WITH(jinja::Template("{{ 'unterminated }}", "d.jinja"), Catch::Contains("d.jinja:1:4: string literal"));
  CHECK_THROWS_WITH(jinja::Template("{{ a ; b }}", "e.jinja"), Catch::Contains("e.jinja:1:6: unexpected character ';'"));
  CHECK_THROWS_WITH(jinja::Template("{% for x in %}{% endfor %}", "f.jinja"), Catch::Contains("f.jinja:1:13:"));
  CHECK_THROWS_WITH(jinja::Template("{% for x in y recursive %}{% endfor %}", "g.jinja"),
                    Catch::Contains("g.jinja:1:15: recursive for loops are not supported"));
  // Render errors name the expression.
  CHECK_THAT(error_of("line one\n{{ x | frobnicate }}"), Catch::Contains("t.jinja:2:6: unsupported filter 'frobnicate'"));
  CHECK_THAT(error_of("{% if 3 is frob %}{% endif %}"), Catch::Contains("t.jinja:1:9: unsupported test 'frob'"));
  CHECK_THAT(error_of("\n\n   {{ missing.attr }}"), Catch::Contains("t.jinja:3:14: 'missing' is undefined"));
  CHECK_THAT(error_of("{{ 'a' + 1 }}"), Catch::Contains("t.jinja:1:8: unsupported operand types for +"));
  CHECK_THAT(error_of("{{ 'é' | upper }}"), Catch::Contains("non-ASCII"));
  CHECK_THAT(error_of("{% set ns = 3 %}{% set ns.x = 1 %}"), Catch::Contains("not a namespace()"));
  // raise_exception: the template's message, with where it was raised.
  CHECK_THAT(error_of("{{ raise_exception('Roles must alternate') }}"),
             Catch::Contains("t.jinja:1:4: the chat template raised an exception: Roles must alternate"));
}

TEST_CASE("jinja: Python values: repr, float formatting, equality, json", "[jinja]") {
  using jinja::Value;
  CHECK(Value(0.1).to_string() == "0.1");
  CHECK(Value(1.0).to_string() == "1.0");
  CHECK(Value(1e16).to_string() == "1e+16");
  CHECK(Value(123456789012345.0).to_string() == "123456789012345.0");
  CHECK(Value(0.0001).to_string() == "0.0001");
  CHECK(Value(0.00001).to_string() == "1e-05");
  CHECK(Value(-2.5e-10).to_string() == "-2.5e-10");
  CHECK(Value("it's").repr() == "\"it's\"");
  CHECK(Value("a\nb").repr() == "'a\\nb'");
  CHECK(Value(int64_t{1}) == Value(1.0));
  CHECK(Value(true) == Value(int64_t{1}));
  CHECK_FALSE(Value("1") == Value(int64_t{1}));
  CHECK(jinja::to_json(Value::from_json(nlohmann::ordered_json::parse(R"({"z": [1, {"a": null}], "b": "\u0001é"})"))) ==
        "{\"z\": [1, {\"a\": null}], \"b\": \"\\u0001é\"}");
  CHECK(jinja::to_json(Value::from_json(nlohmann::ordered_json::parse(R"({"z": 1, "b": 2})")), -1, true) ==
        "{\"b\": 2, \"z\": 1}");
  CHECK_THROWS_WITH(jinja::to_json(Value()), Catch::Contains("not JSON serializable"));
}

TEST_CASE("jinja: rendering is repeatable and leaves the template unchanged", "[jinja]") {
  const jinja::Template t("{% set ns = namespace(n=0) %}{% for i in range(3) %}{% set ns.n = ns.n + i %}{% endfor %}"
                          "{{ ns.n }}",
                          "ns");
  CHECK(t.render({}).text == "3");
  CHECK(t.render({}).text == "3");  // a namespace is created per render, never shared
}
