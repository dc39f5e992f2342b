#ifndef MICRORL_COMMON_BASE_LOGGING_H_
#define MICRORL_COMMON_BASE_LOGGING_H_

#include <sstream>
#include <string>

// Minimal line logger to stderr (Debian's Abseil 20220623 has no absl/log):
//
//   MRL_LOG(INFO) << "listening on " << port;
//
// Each message is written with one write(2), so lines from different threads
// never interleave. Format: "I20261126 04:38:06.123456 rollout_server
// main.cc:42] text". MRL_LOG(FATAL) writes the line and aborts. Thread-safe.

namespace microrl {

enum class LogSeverity { kInfo, kWarning, kError, kFatal };

// Sets the component name printed in every line (e.g. "rollout_server"). Call
// once at start-up, before other threads log.
void SetLogComponent(const std::string& component);

class LogMessage {
 public:
  LogMessage(LogSeverity severity, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;

  std::ostream& stream() { return stream_; }

 private:
  LogSeverity severity_;
  std::ostringstream stream_;
};

}  // namespace microrl

// Severity names accepted by MRL_LOG.
namespace microrl::log_severity {
inline constexpr LogSeverity INFO = LogSeverity::kInfo;
inline constexpr LogSeverity WARNING = LogSeverity::kWarning;
inline constexpr LogSeverity ERROR = LogSeverity::kError;
inline constexpr LogSeverity FATAL = LogSeverity::kFatal;
}  // namespace microrl::log_severity

#define MRL_LOG(severity)                                                      \
  ::microrl::LogMessage(::microrl::log_severity::severity, __FILE__, __LINE__) \
      .stream()

#endif  // MICRORL_COMMON_BASE_LOGGING_H_
