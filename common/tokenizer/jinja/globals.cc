#include <ctime>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/jinja/builtins.h"
#include "common/tokenizer/jinja/errors.h"
#include "common/tokenizer/jinja/text.h"
#include "common/tokenizer/jinja/values.h"

namespace microrl::tokenizer::jinja {

void AddGlobals(std::unordered_map<std::string, Value>& scope) {
  scope["raise_exception"] = Value::FromCallable(MakeCallable(
      "raise_exception",
      [](const std::vector<Value>& args, const KwArgs&) -> Value {
        throw Raised{args.empty() ? "raise_exception" : args[0].Str()};
      }));
  scope["strftime_now"] = Value::FromCallable(MakeCallable(
      "strftime_now", [](const std::vector<Value>& args, const KwArgs&) {
        if (args.empty()) Fail(0, "strftime_now needs a format");
        const std::time_t now = std::time(nullptr);
        std::tm local;
        localtime_r(&now, &local);
        char buffer[256];
        const size_t n = std::strftime(buffer, sizeof(buffer),
                                       args[0].Str().c_str(), &local);
        return Value(std::string(buffer, n));
      }));
  // namespace(...) and dict(...): a mapping from positional mappings and
  // keywords.
  auto mapping = [](bool is_namespace) {
    return
        [is_namespace](const std::vector<Value>& args, const KwArgs& kwargs) {
          auto dict = std::make_shared<Dict>();
          dict->is_namespace = is_namespace;
          for (const Value& arg : args) {
            if (arg.kind() != Value::Kind::kDict) {
              Fail(0, is_namespace ? "namespace() takes a mapping or keywords"
                                   : "dict() takes a mapping or keywords");
            }
            for (const std::string& key : arg.dict()->keys)
              dict->Set(key, *arg.dict()->Find(key));
          }
          for (const auto& [key, value] : kwargs) dict->Set(key, value);
          return Value::FromDict(dict);
        };
  };
  scope["namespace"] =
      Value::FromCallable(MakeCallable("namespace", mapping(true)));
  scope["dict"] = Value::FromCallable(MakeCallable("dict", mapping(false)));
  scope["range"] = Value::FromCallable(
      MakeCallable("range", [](const std::vector<Value>& args, const KwArgs&) {
        if (args.empty() || args.size() > 3)
          Fail(0, "range takes 1 to 3 integers");
        const int64_t start = args.size() > 1 ? args[0].as_int() : 0;
        const int64_t stop =
            args.size() > 1 ? args[1].as_int() : args[0].as_int();
        const int64_t step = args.size() > 2 ? args[2].as_int() : 1;
        if (step == 0) Fail(0, "range step cannot be zero");
        List out;
        for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
          if (out.size() > 1'000'000) Fail(0, "range too large");
          out.emplace_back(i);
        }
        return Value::FromList(std::move(out));
      }));
}

}  // namespace microrl::tokenizer::jinja
