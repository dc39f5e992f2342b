// libFuzzer target over the reward's extraction, parsing and comparison: any
// input must return (within its deadline) without crashing, leaking or hanging.
// Built and run by tests/fuzz/run_fuzz.sh.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/time/clock.h"
#include "reward_service/math_answer.h"
#include "reward_service/scorer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  // Fields separated by '\x01': prompt, completion, ground truth (missing ones
  // empty); the whole input is also compared as an answer with fixed
  // references.
  std::string fields[3];
  size_t field = 0;
  for (char c : input) {
    if (c == '\x01' && field < 2) {
      ++field;
    } else {
      fields[field].push_back(c);
    }
  }
  microrl::reward::ScoreOptions options;
  options.item_deadline = absl::Seconds(2);
  const microrl::reward::ScoreInput item{"fuzz", fields[0], fields[1],
                                         fields[2]};
  microrl::reward::ScoreCompletion(item, options);
  microrl::reward::ScoreAnswer(item, options);
  microrl::reward::MathLimits limits;
  limits.deadline = absl::Now() + absl::Seconds(2);
  for (const char* reference :
       {"\\frac{1}{2}", "(1, 2]", "\\{1, 2\\}", "x^2+1", "025"}) {
    microrl::reward::CompareAnswers(reference, input, limits);
    microrl::reward::CompareAnswers(input, reference, limits);
  }
  return 0;
}
