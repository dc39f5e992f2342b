#include "common/base/memory.h"

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace microrl {

bool KeepFreedMemory() {
  const char* setting = std::getenv("MICRORL_KEEP_FREED_MEMORY");
  if (setting == nullptr || std::strcmp(setting, "1") != 0) return false;
#if defined(__GLIBC__)
  // One arena: other threads' arenas are 64 MiB heaps, and a larger block
  // there is mapped whatever M_MMAP_MAX says.
  bool ok = mallopt(M_ARENA_MAX, 1) == 1;
  ok = mallopt(M_MMAP_MAX, 0) == 1 && ok;  // never map a block of its own
  // Never give the top of the heap back (-1: no trimming, mallopt(3)); grow
  // it 64 MiB at a time.
  ok = mallopt(M_TRIM_THRESHOLD, -1) == 1 && ok;
  ok = mallopt(M_TOP_PAD, 64 << 20) == 1 && ok;
  return ok;
#else
  return false;
#endif
}

}  // namespace microrl
