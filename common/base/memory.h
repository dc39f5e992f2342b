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
// resident memory. Call it first in main, before any thread starts. Does
// nothing (and returns false) where the C library is not glibc, or when
// MICRORL_KEEP_FREED_MEMORY=0.
bool KeepFreedMemory();

}  // namespace microrl

#endif  // MICRORL_COMMON_BASE_MEMORY_H_
