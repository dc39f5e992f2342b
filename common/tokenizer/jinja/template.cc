#include <ctime>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/jinja.h"
#include "common/tokenizer/jinja/builtins.h"
#include "common/tokenizer/jinja/errors.h"
#include "common/tokenizer/jinja/lexer.h"
#include "common/tokenizer/jinja/nodes.h"
#include "common/tokenizer/jinja/parser.h"

namespace microrl::tokenizer::jinja {

Template::~Template() = default;

absl::StatusOr<std::shared_ptr<const Template>> Template::Parse(
    absl::string_view source, absl::string_view name) {
  std::shared_ptr<Template> t(new Template);
  t->name_ = std::string(name);
  try {
    t->body_ = ParseNodes(Lex(source));
  } catch (const Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": template line ", e.line, ": ", e.message));
  }
  return std::shared_ptr<const Template>(std::move(t));
}

absl::StatusOr<std::string> Template::Render(const Value& variables) const {
  Context ctx;
  ctx.scopes.emplace_back();
  auto& globals = ctx.scopes.back();
  AddGlobals(globals);
  if (variables.kind() == Value::Kind::kDict) {
    for (const std::string& key : variables.dict()->keys) {
      globals[key] = *variables.dict()->Find(key);
    }
  }
  ctx.scopes.emplace_back();  // the template's own top-level variables
  std::string out;
  try {
    RenderBody(body_, ctx, &out);
  } catch (const Error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(name_, ": template line ", e.line, ": ", e.message));
  } catch (const Raised& r) {
    return absl::InvalidArgumentError(absl::StrCat(name_, ": ", r.message));
  }
  return out;
}

}  // namespace microrl::tokenizer::jinja
