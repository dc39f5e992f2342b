#include "common/base/flag_usage.h"

#include <string>

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/base/version.h"

namespace microrl {

void SetUpFlagUsage(absl::string_view usage) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  const auto is_main = [](absl::string_view file) {
    return absl::EndsWith(file, "main.cc");
  };
  config.contains_helpshort_flags = is_main;
  config.contains_help_flags = is_main;
  config.version_string = [] {
    return absl::StrCat("microrl ", Version(), "\n");
  };
  absl::SetFlagsUsageConfig(config);
}

}  // namespace microrl
