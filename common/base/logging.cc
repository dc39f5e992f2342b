#include "common/base/logging.h"

#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>

#include "absl/strings/str_format.h"
#include "common/base/enum_names.h"

namespace microrl {
namespace {

// Written once at start-up (SetLogComponent), read afterwards.
std::string& Component() {
  static auto* component = new std::string;
  return *component;
}

constexpr EnumName<LogSeverity> kSeverityLetters[] = {
    {LogSeverity::kInfo, "I"},
    {LogSeverity::kWarning, "W"},
    {LogSeverity::kError, "E"},
    {LogSeverity::kFatal, "F"}};

const char* Basename(const char* path) {
  const char* base = path;
  for (const char* p = path; *p != '\0'; ++p) {
    if (*p == '/') base = p + 1;
  }
  return base;
}

}  // namespace

void SetLogComponent(const std::string& component) { Component() = component; }

LogMessage::LogMessage(LogSeverity severity, const char* file, int line)
    : severity_(severity) {
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm local;
  localtime_r(&tv.tv_sec, &local);
  stream_ << absl::StrFormat(
      "%c%04d%02d%02d %02d:%02d:%02d.%06d %s%s%s:%d] ",
      NameOf(severity, kSeverityLetters)[0], local.tm_year + 1900, local.tm_mon + 1,
      local.tm_mday, local.tm_hour, local.tm_min, local.tm_sec,
      static_cast<int>(tv.tv_usec), Component(), Component().empty() ? "" : " ",
      Basename(file), line);
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string text = stream_.str();
  const char* data = text.data();
  size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, data, left);
    if (n <= 0) break;
    data += n;
    left -= static_cast<size_t>(n);
  }
  if (severity_ == LogSeverity::kFatal) std::abort();
}

}  // namespace microrl
