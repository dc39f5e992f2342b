#ifndef MICRORL_COMMON_BASE_FLAG_USAGE_H_
#define MICRORL_COMMON_BASE_FLAG_USAGE_H_

#include "absl/strings/string_view.h"

namespace microrl {

// Sets a binary's --help text: `usage` first, then the flags its main file
// defines (absl's default only lists flags of files named after the program,
// and microrl's mains are "main.cc"); --version prints the microrl version.
// Call before absl::ParseCommandLine.
void SetUpFlagUsage(absl::string_view usage);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_FLAG_USAGE_H_
