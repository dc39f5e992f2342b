#ifndef MICRORL_COMMON_BASE_FAILPOINT_H_
#define MICRORL_COMMON_BASE_FAILPOINT_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace microrl {

// Fault injection for the fault tests ("failpoints"): named points in the
// code where a test can make a real process fail the way hardware, a peer or
// the operating system would, at a chosen moment. Off unless the environment
// variable MICRORL_FAILPOINTS names points, as
//
//   name=action[@N[+]][,name=action[@N[+]]...]
//
// where action is `error` (the point returns an error: UNAVAILABLE for a
// point that calls a peer, RESOURCE_EXHAUSTED otherwise, as the point's
// comment says) or `kill` (the process SIGKILLs itself there, as a power cut
// or the OOM killer would); @N fires only on the Nth time the point is
// reached (1-based), @N+ on the Nth time and every time after, and without
// either every time. When MICRORL_FAILPOINTS is unset
// a point costs one relaxed atomic load.
//
// The points: docs/development.md#failpoints.
absl::Status Failpoint(absl::string_view name,
                       absl::StatusCode error = absl::StatusCode::kUnavailable);

// Parses a MICRORL_FAILPOINTS value; for tests and for a clear error at start
// (InvalidArgument naming the bad entry).
absl::Status CheckFailpointSpec(const std::string& spec);

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_FAILPOINT_H_
