#include "common/base/version.h"

namespace microrl {

const char* Version() { return MICRORL_VERSION; }

}  // namespace microrl
