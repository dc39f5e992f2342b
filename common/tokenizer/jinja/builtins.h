#ifndef MICRORL_COMMON_TOKENIZER_JINJA_BUILTINS_H_
#define MICRORL_COMMON_TOKENIZER_JINJA_BUILTINS_H_

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/tokenizer/jinja.h"
#include "common/tokenizer/jinja/nodes.h"
#include "common/tokenizer/jinja/values.h"

// What templates can call: filters (`x | name`), tests (`x is name`), the
// methods of strings, dicts and lists, and the global functions. Each kind is
// a table from name to function.
namespace microrl::tokenizer::jinja {

// `input | name(args, kwargs)`.
Value ApplyFilter(const std::string& name, const Value& input,
                  const std::vector<Value>& args, const KwArgs& kwargs,
                  Context& ctx, int line);

// `input is name(args)`.
bool ApplyTest(const std::string& name, const Value& input,
               const std::vector<Value>& args, Context& ctx, int line);

// `object.name`, bound to `object`, for a string, dict or list method.
Value CallMethod(const Value& object, const std::string& name, int line);

// The argument at `index`, else the keyword `name`; null when neither.
inline const Value* Arg(const std::vector<Value>& args, const KwArgs& kwargs,
                        size_t index, const char* name) {
  if (index < args.size()) return &args[index];
  for (const auto& [key, value] : kwargs) {
    if (key == name) return &value;
  }
  return nullptr;
}

// A callable value running `fn`; `name` names it in messages.
inline std::shared_ptr<Callable> MakeCallable(
    std::string name,
    std::function<Value(const std::vector<Value>&, const KwArgs&)> fn) {
  auto callable = std::make_shared<Callable>();
  callable->name = std::move(name);
  callable->call = std::move(fn);
  return callable;
}

// Adds raise_exception, strftime_now, namespace, dict and range to `scope`.
void AddGlobals(std::unordered_map<std::string, Value>& scope);

}  // namespace microrl::tokenizer::jinja

#endif  // MICRORL_COMMON_TOKENIZER_JINJA_BUILTINS_H_
