#include "common/model/ipc_message.h"

#include "absl/strings/str_cat.h"

namespace microrl::model {

absl::Status CheckIpcRange(int64_t offset, int64_t bytes, int64_t available) {
  if (offset < 0 || bytes <= 0 || available < 0 || offset > available ||
      bytes > available - offset) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA IPC adapter: ", bytes, " bytes at offset ", offset,
                     " do not lie inside the shared allocation (", available,
                     " bytes from the opened pointer)"));
  }
  return absl::OkStatus();
}

}  // namespace microrl::model
