// libFuzzer target over chat templates (the Jinja subset): the input is a
// template source, '\x01', then the text used as every message's content. Any
// template must parse and render to a result or an error (deep nesting, huge
// loops and strings included) without crashing or hanging.
// Built and run by tests/fuzz/run_fuzz.sh chat_template.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/tokenizer/chat_template.h"
#include "nlohmann/json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t cut = input.find('\x01');
  const std::string source = input.substr(0, cut);
  const std::string content =
      cut == std::string::npos ? "hello" : input.substr(cut + 1);
  const nlohmann::ordered_json config = {{"bos_token", "<s>"},
                                         {"eos_token", "</s>"}};
  auto chat = microrl::tokenizer::ChatTemplate::FromSource(source, config,
                                                           "fuzz.jinja");
  if (!chat.ok()) return 0;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  for (const char* role : {"system", "user", "assistant", "user"}) {
    // Invalid UTF-8 cannot be a JSON string; the renderer never sees it.
    nlohmann::ordered_json text = nlohmann::ordered_json::parse(
        nlohmann::ordered_json(content).dump(
            -1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
    messages.push_back({{"role", role}, {"content", text}});
  }
  (void)chat->Render(messages, /*add_generation_prompt=*/true);
  (void)chat->Render(messages, /*add_generation_prompt=*/false,
                     {{"enable_thinking", false}});
  return 0;
}
