#ifndef MICRORL_COMMON_MODEL_ATTENTION_H_
#define MICRORL_COMMON_MODEL_ATTENTION_H_

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace microrl::model {

// Prompts held once in "prompt slots" of a KvCache and read by several decode
// rows (the G samples of a group), each of which keeps only its own tokens in
// its own slot. Prompt slot i is KV slot first_slot + i; rows[i] lists the
// decode rows reading it (padded with any row), and each such entry attends to
// the prompt slot's keys [starts, ends) before its own slot's keys (starts ==
// ends: none, for padding and for rows whose prompt is in their own slot). All
// tensors int64 on the decoder's device.
struct SharedPrompts {
  int64_t first_slot = 0;
  int64_t key_length = 0;  // prompt-slot positions read: >= every entry's end
  at::Tensor rows;         // [prompt slots, width]
  // [N]: row n's index in rows.view(-1); distinct, except that rows reading
  // no prompt slot may share an entry that reads no prompt key.
  at::Tensor entry;
  at::Tensor starts;  // [prompt slots, width]
  at::Tensor ends;    // [prompt slots, width]
};

// How attention scores (q k^T) of bfloat16 or float16 activations on CUDA are
// written: in float32 by cuBLAS from the half-precision inputs (accumulating in
// float32 as always), or in the inputs' dtype and then cast, as transformers'
// eager attention does. The caller chooses per call (the decoder once, at
// load: CudaBmmWritesFloat32). On the CPU the inputs are cast to float32 first
// either way.
enum class ScoreOutput { kFloat32, kInputDtype };

// a @ b for batches of matrices, in float32, as `output` says.
at::Tensor BmmFloat(const at::Tensor& a, const at::Tensor& b,
                    ScoreOutput output);

// Whether this LibTorch's cuBLAS path writes a float32 batched matmul from
// `dtype` inputs on `device` (true off CUDA and for float32): one tiny probe.
bool CudaBmmWritesFloat32(const at::Device& device, at::ScalarType dtype);

// Attention of new tokens q [N, T, heads, D] over cached keys and values
// [N, kv_heads, L, D] (views into the head-major cache, any slot stride),
// where mask [N, 1, T, L] (true: not attended; computed once per step, not
// per layer) leaves at least one key per query. Returns [N, heads, T, D] in
// q's dtype.
//
// Two batched matmuls rather than SDPA: with a mask and grouped KV heads, SDPA
// on CUDA falls back to its math kernel, which repeats every KV head for each
// query head sharing it (a copy of the whole cache per layer and step). Here
// the query heads of a KV head are the rows of one matrix, so each KV head is
// read once and nothing is copied but q; scores and softmax are float32.
at::Tensor CachedAttention(const at::Tensor& q, const at::Tensor& keys,
                           const at::Tensor& values, const at::Tensor& mask,
                           ScoreOutput output);

// CachedAttention for one new token per row q [N, 1, heads, D] that also
// attends to a prompt held in a prompt slot: prompt_keys/prompt_values
// [prompt slots, kv_heads, Lp, D], the rows reading each shared.rows
// [prompt slots, W], row n's entry there shared.entry[n], the prompt keys each
// entry does not read prompt_mask [prompt slots, W, Lp]. One softmax over a
// row's prompt keys and its own keys (mask [N, 1, 1, L] as in
// CachedAttention), so the result is the attention over the prompt followed by
// the row's own tokens. Each prompt slot's keys and values are read once for
// all its rows: the queries of its rows are the rows of one matrix per KV head.
at::Tensor SharedPromptAttention(
    const at::Tensor& q, const at::Tensor& keys, const at::Tensor& values,
    const at::Tensor& mask, const at::Tensor& prompt_keys,
    const at::Tensor& prompt_values, const at::Tensor& prompt_mask,
    const SharedPrompts& shared, ScoreOutput output);

}  // namespace microrl::model

#endif  // MICRORL_COMMON_MODEL_ATTENTION_H_
