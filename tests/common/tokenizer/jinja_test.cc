// The template engine's own behaviour; parity with jinja2/transformers on
// templates and snippets is tested by tokenizer_oracle.py (label parity).
#include "common/tokenizer/jinja.h"

#include "common/tokenizer/chat_template.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace microrl::tokenizer::jinja {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<std::string> Render(const std::string& source,
                                   const std::string& json = "{}") {
  absl::StatusOr<std::shared_ptr<const Template>> t =
      Template::Parse(source, "t.jinja");
  if (!t.ok()) return t.status();
  return (*t)->Render(Value::FromJson(nlohmann::ordered_json::parse(json)));
}

std::string Ok(const std::string& source, const std::string& json = "{}") {
  absl::StatusOr<std::string> out = Render(source, json);
  EXPECT_TRUE(out.ok()) << out.status();
  return out.ok() ? *out : "";
}

TEST(JinjaTest, WhitespaceControlAsTransformersConfiguresIt) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the
  // indentation before it; '-' strips all whitespace on its side; one trailing
  // newline goes.
  EXPECT_EQ(Ok("  {% if true %}\n  x\n  {% endif %}\ny\n"), "  x\ny");
  EXPECT_EQ(Ok("a \n {%- if true -%} \n b \n {%- endif %}"), "ab");
  EXPECT_EQ(Ok("{{ 'x' }}\n{{ 'y' }}"), "x\ny");  // no trimming after {{ }}
  EXPECT_EQ(Ok("{# note #}\nz"), "z");
  // Indentation before a block tag that the previous tag's '-' already took
  // (found by the fuzzer: it crashed the lexer). Values from jinja2 with
  // trim_blocks and lstrip_blocks.
  EXPECT_EQ(Ok("{{ 1 -}}\n    {% if true %}x{% endif %}"), "1x");
  EXPECT_EQ(Ok("a {#- c -#}  \n  {% if true %}x{% endif %}"), "ax");
}

TEST(JinjaTest, ScopingNamespacesAndLoops) {
  EXPECT_EQ(Ok("{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{{ x "
               "}}{% endfor %}{{ x }}"),
            "231");
  EXPECT_EQ(Ok("{% set ns = namespace(n=0) %}{% for i in [1, 2] %}{% set ns.n "
               "= ns.n + i %}"
               "{% endfor %}{{ ns.n }}"),
            "3");
  EXPECT_EQ(
      Ok("{% for m in messages[::-1] %}{{ loop.index0 }}{{ m }}{% endfor %}",
         R"({"messages": ["a", "b", "c"]})"),
      "0c1b2a");
}

TEST(JinjaTest, UndefinedBehavesAsJinja2Default) {
  EXPECT_EQ(Ok("[{{ nothing }}]{{ nothing is defined }}{{ not nothing }}{% for "
               "x in nothing %}x"
               "{% endfor %}{{ nothing | length }}"),
            "[]FalseTrue0");
  EXPECT_EQ(Ok("{{ m.missing is defined }}", R"({"m": {"a": 1}})"), "False");
}

TEST(JinjaTest, ErrorsNameTheLine) {
  struct Case {
    std::string source;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"ok\n{% macro f() %}{% endmacro %}",
       "template line 2: unsupported statement 'macro'"},
      {"{{ x | no_such_filter }}",
       "template line 1: unsupported filter 'no_such_filter'"},
      {"\n\n{{ x is no_such_test }}",
       "template line 3: unsupported test 'no_such_test'"},
      {"{% if true %}", "expected 'endif'"},
      {"{{ 'a' + }}", "template line 1: unexpected"},
      {"{{ 'unterminated }}", "unterminated string literal"},
      {"{% for x in y %}{% endif %}", "expected 'endfor'"},
      {"{{ 1 + 'a' }}", "unsupported operand types for +: 'int' and 'str'"},
      {"{{ 'a'.swapcase() }}", "unsupported string method 'swapcase'"},
      {"{{ [1].append(2) }}", "templates cannot modify values"},
      {"{% set d = {} %}{% set d.x = 1 %}",
       "cannot assign attribute on non-namespace object"},
      {"line\n{{ undefined_thing.attr }}",
       "template line 2: undefined value has no attribute"},
      {"{% include 'other' %}", "unsupported statement 'include'"},
  };
  for (const Case& c : cases) {
    const absl::Status status = Render(c.source).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.source;
    EXPECT_THAT(std::string(status.message()), HasSubstr("t.jinja"))
        << c.source;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message)) << status;
  }
  const absl::Status raised =
      Render("{{ raise_exception('No tools here!') }}").status();
  EXPECT_EQ(raised.message(), "t.jinja: No tools here!");
}

TEST(JinjaTest, HostileTemplatesAreRefusedNotRun) {
  struct Case {
    std::string source;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}"
       "{% endfor %}",
       "too many loop iterations"},
      {"{{ range(2000000000) }}", "range too large"},
      {"{{ 'ab' * 1000000000 }}", "repetition too large"},
      {"{{ [1, 2] * 1000000000 }}", "repetition too large"},
      {"{{ 9223372036854775807 + 1 }}", "integer overflow"},
      {"{{ -9223372036854775807 - 2 }}", "integer overflow"},
      {"{{ 3037000500 * 3037000500 }}", "integer overflow"},
      {"{{ 2 ** 1000000000000 }}", "integer overflow"},
      {"{{ " + std::string(5000, '(') + "1" + std::string(5000, ')') + " }}",
       "nested too deeply"},
      // Doubling a string: 2^40 bytes after 40 iterations, never output.
      {"{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
       "{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
       "string concatenation exceeds 64 MiB"},
      {"{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
       "{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
       "string concatenation exceeds 64 MiB"},
      {"{% set ns = namespace(l=[1]) %}{% for i in range(40) %}"
       "{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}",
       "list concatenation exceeds"},
  };
  for (const Case& c : cases) {
    const absl::Status status = Render(c.source).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument)
        << c.source.substr(0, 80);
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message))
        << status.message().substr(0, 200);
  }
  EXPECT_EQ(Ok("{{ 2 ** 62 }} {{ -9223372036854775807 - 1 }} {{ 7 // -2 }}"),
            "4611686018427387904 -9223372036854775808 -4");
}

TEST(JinjaTest, PythonFormattingOfValues) {
  EXPECT_EQ(Ok("{{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e-5 }} {{ 2.0 }} {{ -0.0 }} {{ "
               "10 / 4 }}"),
            "0.30000000000000004 1e+16 1e-05 2.0 -0.0 2.5");
  EXPECT_EQ(Ok("{{ [\"it's\", 'a\\n', none, true] }}"),
            "[\"it's\", 'a\\n', None, True]");
  EXPECT_EQ(Ok("{{ x | tojson }}",
               R"({"x": {"é": [1, 2.5, null], "q": "\"\n\u0001"}})"),
            R"({"é": [1, 2.5, null], "q": "\"\n\u0001"})");
  EXPECT_EQ(Ok("{{ x | tojson(indent=2) }}", R"({"x": {"a": [1], "b": {}}})"),
            "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}");
}

TEST(ChatTemplateTest, TokenizerConfigShapes) {
  // chat_template as a list of named templates; bos as an AddedToken dict.
  const nlohmann::ordered_json config = {
      {"bos_token", {{"content", "<s>"}, {"lstrip", false}}},
      {"eos_token", "</s>"}};
  absl::StatusOr<ChatTemplate> chat = ChatTemplate::FromSource(
      "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ "
      "eos_token }}"
      "{{ tools is none }}{{ add_generation_prompt }}",
      config, "inline");
  ASSERT_TRUE(chat.ok()) << chat.status();
  absl::StatusOr<std::string> out = chat->Render(
      nlohmann::ordered_json::parse(R"([{"role": "user", "content": "hi"}])"),
      true);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, "<s>hi</s>TrueTrue");
  EXPECT_FALSE(
      chat->Render(nlohmann::ordered_json::parse(R"(["not a message"])"), false)
          .ok());
}

}  // namespace
}  // namespace microrl::tokenizer::jinja
