#ifndef MICRORL_COMMON_BASE_VERSION_H_
#define MICRORL_COMMON_BASE_VERSION_H_

namespace microrl {

// The microrl version these binaries were built from ("0.1.0"), from
// CMakeLists.txt.
const char* Version();

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_VERSION_H_
