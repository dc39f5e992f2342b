#include <utf8proc.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer/jinja/builtins.h"
#include "common/tokenizer/jinja/errors.h"
#include "common/tokenizer/jinja/text.h"
#include "common/tokenizer/jinja/values.h"

namespace microrl::tokenizer::jinja {
namespace {

std::vector<std::string> PySplit(const std::string& s, const Value* sep,
                                 int64_t max_split) {
  std::vector<std::string> parts;
  if (sep == nullptr || sep->is_none()) {
    const std::u32string text = U32(s);
    size_t i = 0;
    while (true) {
      while (i < text.size() && IsPySpace(text[i])) ++i;
      if (i >= text.size()) break;
      if (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split) {
        std::u32string rest = text.substr(i);
        while (!rest.empty() && IsPySpace(rest.back())) rest.pop_back();
        parts.push_back(U8(rest));
        break;
      }
      size_t j = i;
      while (j < text.size() && !IsPySpace(text[j])) ++j;
      parts.push_back(U8(text.substr(i, j - i)));
      i = j;
    }
    return parts;
  }
  const std::string delimiter = sep->Str();
  if (delimiter.empty()) Fail(0, "empty separator");
  size_t start = 0;
  while (true) {
    const size_t found = s.find(delimiter, start);
    if (found == std::string::npos ||
        (max_split >= 0 && static_cast<int64_t>(parts.size()) == max_split)) {
      parts.push_back(s.substr(start));
      return parts;
    }
    parts.push_back(s.substr(start, found - start));
    start = found + delimiter.size();
  }
}

Value StringList(const std::vector<std::string>& items) {
  List list;
  for (const std::string& item : items) list.emplace_back(item);
  return Value::FromList(std::move(list));
}

bool StartsOrEnds(const std::string& s, const Value& what, bool starts,
                  int line) {
  std::vector<std::string> options;
  if (what.is_string()) {
    options.push_back(what.as_string());
  } else if (what.kind() == Value::Kind::kList) {
    for (const Value& v : *what.list()) options.push_back(v.Str());
  } else {
    Fail(line, "startswith/endswith need a string or a tuple of strings");
  }
  for (const std::string& option : options) {
    if (starts ? absl::StartsWith(s, option) : absl::EndsWith(s, option))
      return true;
  }
  return false;
}

// A method of a string, dict or list, bound to the value: each gets the value,
// the name it was called by (aliases share a function) and the line.
using StringMethod = Value (*)(const std::string& s, const std::string& name,
                               int line);
using DictMethod = Value (*)(const std::shared_ptr<Dict>& dict,
                             const std::string& name, int line);
using ListMethod = Value (*)(const std::shared_ptr<List>& list,
                             const std::string& name, int line);

Value Bound(const std::string& name,
            std::function<Value(const std::vector<Value>&, const KwArgs&)> fn) {
  return Value::FromCallable(MakeCallable(name, std::move(fn)));
}

Value StripStringMethod(const std::string& s, const std::string& name,
                        int line) {
  return Bound(name, [s, name](const std::vector<Value>& a, const KwArgs& k) {
    const Value* chars = Arg(a, k, 0, "chars");
    return Value(Strip(s, chars, name != "rstrip", name != "lstrip"));
  });
}

Value SplitStringMethod(const std::string& s, const std::string& name,
                        int line) {
  return Bound(name, [s, name](const std::vector<Value>& a, const KwArgs& k) {
    const Value* sep = Arg(a, k, 0, "sep");
    const Value* max = Arg(a, k, 1, "maxsplit");
    if (name == "rsplit" && max != nullptr && max->as_int() >= 0) {
      Fail(0, "rsplit with maxsplit is not supported");
    }
    return StringList(PySplit(s, sep, max == nullptr ? -1 : max->as_int()));
  });
}

Value SplitLinesStringMethod(const std::string& s, const std::string& name,
                             int line) {
  return Bound(name, [s](const std::vector<Value>&, const KwArgs&) {
    std::vector<std::string> lines = PySplit(s, nullptr, -1);
    lines.clear();
    size_t start = 0;
    for (size_t i = 0; i <= s.size(); ++i) {
      if (i == s.size() || s[i] == '\n') {
        if (i > start || i < s.size())
          lines.push_back(s.substr(start, i - start));
        start = i + 1;
      }
    }
    if (!lines.empty() && lines.back().empty() && !s.empty() &&
        s.back() == '\n')
      lines.pop_back();
    return StringList(lines);
  });
}

Value StartsOrEndsWithStringMethod(const std::string& s,
                                   const std::string& name, int line) {
  return Bound(
      name, [s, name, line](const std::vector<Value>& a, const KwArgs&) {
        if (a.empty()) Fail(line, name + " needs an argument");
        return Value(StartsOrEnds(s, a[0], name == "startswith", line));
      });
}

Value CaseStringMethod(const std::string& s, const std::string& name,
                       int line) {
  return Bound(name, [s, name](const std::vector<Value>&, const KwArgs&) {
    return Value(MapCase(s, name == "upper"));
  });
}

Value TitleStringMethod(const std::string& s, const std::string& name,
                        int line) {
  return Bound(name, [s, name](const std::vector<Value>&, const KwArgs&) {
    return Value(Title(s, name == "capitalize"));
  });
}

Value ReplaceStringMethod(const std::string& s, const std::string& name,
                          int line) {
  return Bound(name, [s, line](const std::vector<Value>& a, const KwArgs&) {
    if (a.size() < 2) Fail(line, "replace needs two arguments");
    const std::string from = a[0].Str(), to = a[1].Str();
    int64_t count = a.size() > 2 ? a[2].as_int() : -1;
    if (from.empty()) Fail(line, "replace of an empty string is not supported");
    std::string out;
    size_t start = 0;
    while (count != 0) {
      const size_t found = s.find(from, start);
      if (found == std::string::npos) break;
      out += s.substr(start, found - start) + to;
      start = found + from.size();
      --count;
    }
    return Value(out + s.substr(start));
  });
}

Value FindOrCountStringMethod(const std::string& s, const std::string& name,
                              int line) {
  return Bound(
      name, [s, name, line](const std::vector<Value>& a, const KwArgs&) {
        if (a.empty() || !a[0].is_string())
          Fail(line, name + " needs a string");
        const std::string& needle = a[0].as_string();
        if (name == "find") {
          const size_t at = s.find(needle);
          return Value(at == std::string::npos
                           ? int64_t{-1}
                           : static_cast<int64_t>(U32(s.substr(0, at)).size()));
        }
        int64_t n = 0;
        if (needle.empty())
          return Value(static_cast<int64_t>(U32(s).size() + 1));
        for (size_t at = s.find(needle); at != std::string::npos;
             at = s.find(needle, at + needle.size()))
          ++n;
        return Value(n);
      });
}

Value JoinStringMethod(const std::string& s, const std::string& name,
                       int line) {
  return Bound(name, [s, line](const std::vector<Value>& a, const KwArgs&) {
    if (a.empty()) Fail(line, "join needs an iterable");
    std::string out;
    bool first = true;
    for (const Value& item : Iterate(a[0], line)) {
      if (!first) out += s;
      first = false;
      if (!item.is_string()) Fail(line, "join expects strings");
      out += item.as_string();
    }
    return Value(out);
  });
}

Value CharacterClassStringMethod(const std::string& s, const std::string& name,
                                 int line) {
  return Bound(name, [s, name](const std::vector<Value>&, const KwArgs&) {
    const std::u32string text = U32(s);
    if (text.empty()) return Value(false);
    for (char32_t c : text) {
      const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
      const bool digit = category == UTF8PROC_CATEGORY_ND;
      const bool alpha =
          category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO;
      const bool ok = name == "isdigit"   ? digit
                      : name == "isalpha" ? alpha
                      : name == "isspace" ? IsPySpace(c)
                                          : (digit || alpha);
      if (!ok) return Value(false);
    }
    return Value(true);
  });
}

Value ViewDictMethod(const std::shared_ptr<Dict>& dict, const std::string& name,
                     int line) {
  return Bound(name, [dict, name](const std::vector<Value>&, const KwArgs&) {
    List out;
    for (const std::string& key : dict->keys) {
      if (name == "keys") {
        out.emplace_back(key);
      } else if (name == "values") {
        out.push_back(*dict->Find(key));
      } else {
        out.push_back(Value::FromTuple({Value(key), *dict->Find(key)}));
      }
    }
    return Value::FromList(std::move(out));
  });
}

Value GetDictMethod(const std::shared_ptr<Dict>& dict, const std::string& name,
                    int line) {
  return Bound(name, [dict](const std::vector<Value>& a, const KwArgs& k) {
    const Value* key = Arg(a, k, 0, "key");
    const Value* fallback = Arg(a, k, 1, "default");
    if (key != nullptr && key->is_string()) {
      const Value* found = dict->Find(key->as_string());
      if (found != nullptr) return *found;
    }
    return fallback != nullptr ? *fallback : Value::None();
  });
}

Value IndexOrCountListMethod(const std::shared_ptr<List>& list,
                             const std::string& name, int line) {
  return Bound(name,
               [list, name, line](const std::vector<Value>& a, const KwArgs&) {
                 if (a.empty()) Fail(line, name + " needs an argument");
                 int64_t count = 0;
                 for (size_t i = 0; i < list->size(); ++i) {
                   if (Equal((*list)[i], a[0])) {
                     if (name == "index") return Value(static_cast<int64_t>(i));
                     ++count;
                   }
                 }
                 if (name == "index") Fail(line, "value is not in list");
                 return Value(count);
               });
}

// Method name -> function, per type.
const std::unordered_map<std::string, StringMethod>& StringMethods() {
  static const auto* methods =
      new std::unordered_map<std::string, StringMethod>{
          {"strip", StripStringMethod},
          {"lstrip", StripStringMethod},
          {"rstrip", StripStringMethod},
          {"split", SplitStringMethod},
          {"rsplit", SplitStringMethod},
          {"splitlines", SplitLinesStringMethod},
          {"startswith", StartsOrEndsWithStringMethod},
          {"endswith", StartsOrEndsWithStringMethod},
          {"upper", CaseStringMethod},
          {"lower", CaseStringMethod},
          {"title", TitleStringMethod},
          {"capitalize", TitleStringMethod},
          {"replace", ReplaceStringMethod},
          {"find", FindOrCountStringMethod},
          {"count", FindOrCountStringMethod},
          {"join", JoinStringMethod},
          {"isdigit", CharacterClassStringMethod},
          {"isalpha", CharacterClassStringMethod},
          {"isspace", CharacterClassStringMethod},
          {"isalnum", CharacterClassStringMethod},
      };
  return *methods;
}

const std::unordered_map<std::string, DictMethod>& DictMethods() {
  static const auto* methods = new std::unordered_map<std::string, DictMethod>{
      {"items", ViewDictMethod},
      {"keys", ViewDictMethod},
      {"values", ViewDictMethod},
      {"get", GetDictMethod}};
  return *methods;
}

const std::unordered_map<std::string, ListMethod>& ListMethods() {
  static const auto* methods = new std::unordered_map<std::string, ListMethod>{
      {"index", IndexOrCountListMethod}, {"count", IndexOrCountListMethod}};
  return *methods;
}

}  // namespace

Value CallMethod(const Value& object, const std::string& name, int line) {
  if (object.is_string()) {
    const auto it = StringMethods().find(name);
    if (it == StringMethods().end()) {
      Fail(line, absl::StrCat("unsupported string method '", name, "'"));
    }
    return it->second(object.as_string(), name, line);
  }
  if (object.kind() == Value::Kind::kDict) {
    const auto it = DictMethods().find(name);
    if (it != DictMethods().end()) return it->second(object.dict(), name, line);
  }
  if (object.kind() == Value::Kind::kList) {
    const auto it = ListMethods().find(name);
    if (it == ListMethods().end()) {
      Fail(line, absl::StrCat("unsupported list method '", name,
                              "' (templates cannot modify values)"));
    }
    return it->second(object.list(), name, line);
  }
  Fail(line, absl::StrCat("'", TypeName(object), "' object has no attribute '",
                          name, "'"));
}

}  // namespace microrl::tokenizer::jinja
