#ifndef MICRORL_COMMON_BASE_ENUM_NAMES_H_
#define MICRORL_COMMON_BASE_ENUM_NAMES_H_

#include <cstddef>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

// One table names an enum's values and is read both ways: value to name for
// logs, protos and files; name to value for configurations and requests. A
// value may have several names: the first is its own, the others are accepted
// aliases. Define the table once, next to the enum:
//
//   inline constexpr EnumName<Color> kColorNames[] = {
//       {Color::kRed, "red"}, {Color::kGreen, "green"}, {Color::kGreen, "g"}};
namespace microrl {

template <typename E>
struct EnumName {
  E value;
  const char* name;
};

// The own name of `value`, or `unknown` when the table lacks it.
template <typename E, size_t N>
constexpr const char* NameOf(E value, const EnumName<E> (&names)[N],
                             const char* unknown = "?") {
  for (const EnumName<E>& entry : names) {
    if (entry.value == value) return entry.name;
  }
  return unknown;
}

// The value `name` names (an own name or an alias).
template <typename E, size_t N>
std::optional<E> ValueOf(absl::string_view name,
                         const EnumName<E> (&names)[N]) {
  for (const EnumName<E>& entry : names) {
    if (name == entry.name) return entry.value;
  }
  return std::nullopt;
}

// Whether names[i] is its value's own name (no earlier entry names the value).
template <typename E, size_t N>
constexpr bool IsOwnName(const EnumName<E> (&names)[N], size_t i) {
  for (size_t j = 0; j < i; ++j) {
    if (names[j].value == names[i].value) return false;
  }
  return true;
}

// The value `name` names when it is a value's own name (aliases refused).
template <typename E, size_t N>
std::optional<E> ValueOfOwnName(absl::string_view name,
                                const EnumName<E> (&names)[N]) {
  for (size_t i = 0; i < N; ++i) {
    if (name == names[i].name && IsOwnName(names, i)) return names[i].value;
  }
  return std::nullopt;
}

// The own names in table order, for messages: "a, b or c" with the defaults.
template <typename E, size_t N>
std::string OwnNames(const EnumName<E> (&names)[N],
                     absl::string_view separator = ", ",
                     absl::string_view last_separator = " or ") {
  size_t total = 0;
  for (size_t i = 0; i < N; ++i) total += IsOwnName(names, i) ? 1 : 0;
  std::string out;
  size_t count = 0;
  for (size_t i = 0; i < N; ++i) {
    if (!IsOwnName(names, i)) continue;
    if (count > 0) {
      const absl::string_view between =
          count + 1 == total ? last_separator : separator;
      out.append(between.data(), between.size());
    }
    out.append(names[i].name);
    ++count;
  }
  return out;
}

// ValueOf, or InvalidArgument: "<what> \"<name>\" is not one of a, b, c".
template <typename E, size_t N>
absl::StatusOr<E> ParseEnumName(absl::string_view what, absl::string_view name,
                                const EnumName<E> (&names)[N]) {
  const std::optional<E> value = ValueOf(name, names);
  if (value.has_value()) return *value;
  return absl::InvalidArgumentError(absl::StrCat(
      what, " \"", name, "\" is not one of ", OwnNames(names, ", ", ", ")));
}

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_ENUM_NAMES_H_
