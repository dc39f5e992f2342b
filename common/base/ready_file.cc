#include "common/base/ready_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/base/file.h"
#include "nlohmann/json.hpp"

namespace microrl {

absl::Status WriteReadyFile(const std::string& path, const ReadyInfo& info) {
  const nlohmann::json json = {{"component", info.component},
                               {"grpc_port", info.grpc_port},
                               {"metrics_port", info.metrics_port},
                               {"pid", info.pid}};
  return WriteFileAtomically(path, json.dump() + "\n");
}

absl::StatusOr<ReadyInfo> ReadReadyFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok())
    return absl::NotFoundError(absl::StrCat("no ready file at ", path));
  const nlohmann::json json = nlohmann::json::parse(*text, nullptr,
                                                    /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not a JSON object"));
  }
  ReadyInfo info;
  try {
    info.component = json.at("component").get<std::string>();
    info.grpc_port = json.at("grpc_port").get<int>();
    info.metrics_port = json.at("metrics_port").get<int>();
    info.pid = json.at("pid").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    return absl::DataLossError(absl::StrCat(path, ": ", e.what()));
  }
  return info;
}

}  // namespace microrl
