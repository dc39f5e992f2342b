#ifndef MICRORL_TOOLS_MICRORL_LOGPROBS_COMMAND_H_
#define MICRORL_TOOLS_MICRORL_LOGPROBS_COMMAND_H_

#include <istream>
#include <ostream>
#include <string>

#include "absl/status/status.h"

namespace microrl::cli {

struct LogprobsCommandOptions {
  std::string model_dir;    // Hugging Face model directory
  std::string adapter_dir;  // PEFT adapter directory; empty: base model
  std::string device = "cpu";
  double temperature = 1.0;
  int batch_lines = 16;  // lines scored together as one padded batch
};

// `microrl logprobs`: reads JSON lines {"ids": [...], "start": N} from `in` and
// writes, per line and in order, {"logprobs": [...], "entropy": [...]} for the
// tokens at positions N.. (each token's log-probability given the tokens before
// it, under logits / temperature, and the entropy of that distribution).
// `start` defaults to 1 and must be >= 1. A malformed line stops the command
// with InvalidArgument naming the line; lines before it have been written.
absl::Status RunLogprobsCommand(const LogprobsCommandOptions& options,
                                std::istream& in, std::ostream& out);

}  // namespace microrl::cli

#endif  // MICRORL_TOOLS_MICRORL_LOGPROBS_COMMAND_H_
