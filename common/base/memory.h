#ifndef MICRORL_COMMON_BASE_MEMORY_H_
#define MICRORL_COMMON_BASE_MEMORY_H_

namespace microrl {

// Makes the C library keep freed heap memory for the next allocation instead
// of returning it to the kernel. Tensors on the CPU are allocated with malloc;
// by default glibc maps every block over 32 MiB afresh (and any block over
// 64 MiB allocated off the main thread), so an update's activations and
// logits chunks paid for page faults and page zeroing on every allocation: a
// (b)-shaped update on qwen2-100m spent 107 s of system time in 71 s of wall
// time (docs/learner.md). After this call all threads allocate from one heap
// that grows and is reused, never trimmed: the process keeps its peak
// resident memory. Call it first in main, before any thread starts.
// Opt-in: does nothing (and returns false) unless MICRORL_KEEP_FREED_MEMORY=1,
// and where the C library is not glibc. Off by default because two such
// processes computing at once on the same cores slowed each other badly (two
// concurrent `learner sft` runs: 138 s against 7.5 s, their time spent
// spinning in libgomp).
bool KeepFreedMemory();

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_MEMORY_H_
