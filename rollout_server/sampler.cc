#include "rollout_server/sampler.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>

#include "common/base/random.h"
#include "common/model/tensor_io.h"

namespace microrl::rollout {
double RowUniform(uint64_t seed, int64_t position) {
  // splitmix64 of the seed, then of the position: a uniform 53-bit fraction.
  const uint64_t bits =
      SplitMix64(SplitMix64(seed) ^ static_cast<uint64_t>(position));
  return (static_cast<double>(bits >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

at::Tensor TopKMask(const at::Tensor& scaled,
                    const std::vector<int64_t>& top_k) {
  const int64_t vocab = scaled.size(1);
  int64_t k_max = 0;
  bool any = false;
  for (int64_t k : top_k) {
    if (k > 0 && k < vocab) {
      any = true;
      k_max = std::max(k_max, k);
    }
  }
  if (!any) return scaled;
  // The k-th largest value of each row is its threshold (rows without top-k
  // keep everything).
  const at::Tensor top =
      std::get<0>(at::topk(scaled, k_max, /*dim=*/1));  // [N, k_max]
  std::vector<int64_t> index(top_k.size());
  std::vector<uint8_t> active(top_k.size());
  for (size_t n = 0; n < top_k.size(); ++n) {
    const bool on = top_k[n] > 0 && top_k[n] < vocab;
    index[n] = on ? top_k[n] - 1 : 0;
    active[n] = on;
  }
  const at::Tensor idx =
      model::HostToDevice(index, at::kLong, scaled.device()).unsqueeze(1);
  const at::Tensor on = model::HostToDevice(active, at::kByte, scaled.device())
                            .to(at::kBool)
                            .unsqueeze(1);
  const at::Tensor threshold = top.gather(1, idx);  // [N, 1]
  return at::where(
      on.logical_and(scaled < threshold),
      at::full({}, -std::numeric_limits<float>::infinity(), scaled.options()),
      scaled);
}

namespace {

// The probability of the last token the nucleus keeps: the k-th largest of
// `probs[0, n)` for the smallest k whose k largest reach `p` in mass. A
// quickselect weighted by mass, expected O(n); reorders `values`, a copy.
float NucleusFloor(std::vector<float>& values, double p) {
  size_t lo = 0;
  size_t hi = values.size();
  double above = 0;  // mass of the values known to be larger than [lo, hi)
  while (lo < hi) {
    const float pivot = values[lo + (hi - lo) / 2];
    // Three-way partition: [lo, gt) > pivot, [gt, eq) == pivot, rest <.
    size_t gt = lo;
    size_t eq = lo;
    size_t lt = hi;
    double mass_gt = 0;
    double mass_eq = 0;
    while (eq < lt) {
      const float v = values[eq];
      if (v > pivot) {
        mass_gt += v;
        std::swap(values[gt++], values[eq++]);
      } else if (v < pivot) {
        std::swap(values[eq], values[--lt]);
      } else {
        mass_eq += v;
        ++eq;
      }
    }
    if (gt > lo && above + mass_gt >= p) {
      hi = gt;  // the floor is among the larger values
    } else if (above + mass_gt + mass_eq >= p || lt == hi) {
      return pivot;
    } else {
      above += mass_gt + mass_eq;
      lo = lt;
    }
  }
  // Rounding left the whole row short of p: keep everything.
  return 0.0f;
}

// TopPMask on the CPU without a sort: a [64, 32000] sort cost 60 ms of a
// 160 ms decode step of qwen2-100m on 2 cores; this, one selection per row.
at::Tensor TopPMaskBySelection(const at::Tensor& scaled,
                               const std::vector<double>& top_p) {
  const at::Tensor probs = at::softmax(scaled, 1).contiguous();
  const int64_t rows = probs.size(0);
  const int64_t vocab = probs.size(1);
  at::Tensor floors = at::zeros({rows, 1}, probs.options());
  const float* data = probs.data_ptr<float>();
  float* floor = floors.data_ptr<float>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> values;
    for (int64_t row = begin; row < end; ++row) {
      if (top_p[row] >= 1.0) continue;  // floor 0: keeps every token
      values.assign(data + row * vocab, data + (row + 1) * vocab);
      floor[row] = NucleusFloor(values, top_p[row]);
    }
  });
  return at::where(
      probs < floors,
      at::full({}, -std::numeric_limits<float>::infinity(), scaled.options()),
      scaled);
}

// An order-preserving bucket of a non-negative float: its exponent and top
// three mantissa bits (< 2048).
inline uint32_t MassBucket(float p) {
  uint32_t bits;
  std::memcpy(&bits, &p, sizeof(bits));
  return bits >> 20;
}
constexpr int kMassBuckets = 2048;

// NucleusFloor over the row's values at or above `floor`, for mass `target`,
// in one pass: their mass by MassBucket, then NucleusFloor over the values
// of the one bucket where the mass from the top reaches the target.
float NucleusFloorByBuckets(const float* p, int64_t vocab, float floor,
                            double target, std::vector<double>& mass,
                            std::vector<float>& values) {
  mass.assign(kMassBuckets, 0.0);
  for (int64_t v = 0; v < vocab; ++v) {
    if (p[v] >= floor) mass[MassBucket(p[v])] += p[v];
  }
  double above = 0;
  int bucket = kMassBuckets - 1;
  for (; bucket >= 0; --bucket) {
    if (above + mass[bucket] >= target) break;
    above += mass[bucket];
  }
  if (bucket < 0) return 0.0f;  // rounding left the row short: keep it all
  values.clear();
  for (int64_t v = 0; v < vocab; ++v) {
    if (p[v] >= floor && MassBucket(p[v]) == static_cast<uint32_t>(bucket)) {
      values.push_back(p[v]);
    }
  }
  const float within = NucleusFloor(values, target - above);
  // (0 when rounding left the bucket short: keep all of it.)
  return within > 0 ? within : *std::min_element(values.begin(), values.end());
}

// Sample's draw on the CPU (float32): from probs = softmax(scaled) [N, V],
// each row's top-k floor by selection, its nucleus floor over the tokens
// top-k keeps (mass p of theirs), then inverse-CDF over the tokens at or
// above the floor: the kept mass in blocks of the vocabulary, the block
// where u times the total falls, and a scan inside it. Same rule as the
// chain of masks, softmax, cumulative sum and search the other devices run
// (up to float rounding at a boundary), without a [N, V] mask, sort or
// cumulative sum: on qwen2-100m's [64, 32000] those were a sixth of a 2-core
// decode step. Greedy rows are skipped (their token stays 0).
std::vector<int64_t> DrawOnCpu(const at::Tensor& probs,
                               const std::vector<uint8_t>& greedy,
                               const std::vector<int64_t>& top_k,
                               const std::vector<double>& top_p,
                               const std::vector<double>& uniforms) {
  constexpr int64_t kBlock = 256;
  const int64_t rows = probs.size(0);
  const int64_t vocab = probs.size(1);
  const int64_t blocks = (vocab + kBlock - 1) / kBlock;
  const float* data = probs.data_ptr<float>();
  std::vector<int64_t> tokens(rows, 0);
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> values;
    std::vector<double> mass;
    std::vector<double> block_mass(blocks);
    for (int64_t row = begin; row < end; ++row) {
      if (greedy[row]) continue;
      const float* p = data + row * vocab;
      float floor = 0;  // tokens below it are truncated
      if (top_k[row] > 0 && top_k[row] < vocab) {
        values.assign(p, p + vocab);
        std::nth_element(values.begin(), values.begin() + (top_k[row] - 1),
                         values.end(), std::greater<float>());
        floor = values[top_k[row] - 1];
      }
      double total = 0;
      auto block_sums = [&] {
        total = 0;
        for (int64_t b = 0; b < blocks; ++b) {
          const int64_t from = b * kBlock;
          const int64_t to = std::min(vocab, from + kBlock);
          // Eight partial sums: the compiler vectorizes them.
          float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
          int64_t v = from;
          for (; v + 8 <= to; v += 8) {
            for (int j = 0; j < 8; ++j) {
              partial[j] += p[v + j] >= floor ? p[v + j] : 0.0f;
            }
          }
          double sum = 0;
          for (; v < to; ++v) sum += p[v] >= floor ? p[v] : 0.0f;
          for (int j = 0; j < 8; ++j) sum += partial[j];
          block_mass[b] = sum;
          total += sum;
        }
      };
      block_sums();
      if (top_p[row] < 1.0) {
        floor = std::max(
            floor, NucleusFloorByBuckets(p, vocab, floor, top_p[row] * total,
                                         mass, values));
        block_sums();
      }
      // The first token whose cumulative mass reaches u * total: a truncated
      // or zero-probability token never is (the sum does not grow there).
      const double target = uniforms[row] * total;
      double sum = 0;
      int64_t token = -1;
      int64_t last = -1;
      for (int64_t b = 0; b < blocks && token < 0; ++b) {
        if (block_mass[b] <= 0) continue;
        const int64_t from = b * kBlock;
        const int64_t to = std::min(vocab, from + kBlock);
        if (sum + block_mass[b] < target && b + 1 < blocks) {
          sum += block_mass[b];
          for (int64_t v = to - 1; v >= from; --v) {
            if (p[v] >= floor && p[v] > 0) {
              last = v;
              break;
            }
          }
          continue;
        }
        for (int64_t v = from; v < to; ++v) {
          if (p[v] >= floor && p[v] > 0) {
            sum += p[v];
            last = v;
            if (sum >= target) {
              token = v;
              break;
            }
          }
        }
      }
      tokens[row] = token >= 0 ? token : std::max<int64_t>(last, 0);
    }
  });
  return tokens;
}

}  // namespace

at::Tensor TopPMask(const at::Tensor& scaled,
                    const std::vector<double>& top_p) {
  if (std::all_of(top_p.begin(), top_p.end(),
                  [](double p) { return p >= 1.0; }))
    return scaled;
  if (scaled.device().is_cpu() && scaled.scalar_type() == at::kFloat) {
    return TopPMaskBySelection(scaled, top_p);
  }
  return TopPMaskBySort(scaled, top_p);
}

at::Tensor TopPMaskBySort(const at::Tensor& scaled,
                          const std::vector<double>& top_p) {
  const auto [sorted, order] = at::sort(scaled, /*dim=*/1, /*descending=*/true);
  const at::Tensor probs = at::softmax(sorted, 1);
  // Rows without top-p get an infinite threshold, so float rounding of their
  // cumulative mass never drops a token.
  std::vector<float> thresholds(top_p.size());
  for (size_t n = 0; n < top_p.size(); ++n) {
    thresholds[n] = top_p[n] >= 1.0 ? std::numeric_limits<float>::infinity()
                                    : static_cast<float>(top_p[n]);
  }
  const at::Tensor p =
      model::HostToDevice(thresholds, at::kFloat, scaled.device()).unsqueeze(1);
  // Keep the smallest prefix whose mass reaches p: a token is dropped when the
  // mass before it already reaches p. The most likely token always stays.
  const at::Tensor before = at::cumsum(probs, 1) - probs;
  const at::Tensor drop_sorted = before >= p;
  drop_sorted.narrow(1, 0, 1).fill_(false);
  const at::Tensor drop =
      at::zeros_like(drop_sorted).scatter(1, order, drop_sorted);
  return at::where(
      drop,
      at::full({}, -std::numeric_limits<float>::infinity(), scaled.options()),
      scaled);
}

SampleResult Sample(const at::Tensor& logits,
                    const std::vector<RowSampling>& rows) {
  const int64_t n = logits.size(0);
  const int64_t vocab = logits.size(1);
  std::vector<float> inverse_temperature(n);
  std::vector<uint8_t> greedy(n);
  std::vector<int64_t> top_k(n);
  std::vector<double> top_p(n);
  std::vector<double> uniforms(n);  // one per sampled row
  bool all_greedy = true;
  int top = 0;
  for (int64_t i = 0; i < n; ++i) {
    top = std::max(top, rows[i].top_logprobs);
    // Below kGreedyTemperature, 1 / T overflows float logits: greedy.
    greedy[i] = rows[i].temperature < kGreedyTemperature;
    all_greedy = all_greedy && greedy[i];
    inverse_temperature[i] =
        greedy[i] ? 1.0f : static_cast<float>(1.0 / rows[i].temperature);
    top_k[i] = rows[i].top_k;
    top_p[i] = rows[i].top_p;
    if (!greedy[i]) uniforms[i] = RowUniform(rows[i].seed, rows[i].position);
  }
  const at::Device device = logits.device();
  const at::Tensor scaled =
      logits.to(at::kFloat) *
      model::HostToDevice(inverse_temperature, at::kFloat, device)
          .unsqueeze(1);  // [N, V]
  const at::Tensor log_probs = at::log_softmax(scaled, 1);
  if (device.is_cpu() && !all_greedy && top == 0) {
    std::vector<int64_t> drawn =
        DrawOnCpu(log_probs.exp().contiguous(), greedy, top_k, top_p, uniforms);
    if (std::any_of(greedy.begin(), greedy.end(),
                    [](uint8_t g) { return g; })) {
      const at::Tensor argmax = scaled.argmax(1).contiguous();
      const int64_t* best = argmax.data_ptr<int64_t>();
      for (int64_t i = 0; i < n; ++i) {
        if (greedy[i]) drawn[i] = best[i];
      }
    }
    const at::Tensor tokens = at::tensor(drawn, at::kLong);
    return SampleResult{tokens,
                        log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1)};
  }
  at::Tensor tokens = scaled.argmax(1);
  if (!all_greedy) {
    // Inverse-CDF sampling from the truncated distribution with one uniform per
    // row: the first token whose cumulative probability reaches u. Masked
    // tokens have zero width, so they are never chosen.
    const at::Tensor cdf =
        at::cumsum(at::softmax(TopPMask(TopKMask(scaled, top_k), top_p), 1), 1);
    const at::Tensor target = model::HostToDevice(uniforms, at::kDouble, device)
                                  .to(at::kFloat)
                                  .unsqueeze(1) *
                              cdf.narrow(1, vocab - 1, 1);
    const at::Tensor sampled =
        at::searchsorted(cdf, target).squeeze(1).clamp_max(vocab - 1);
    const at::Tensor is_greedy =
        model::HostToDevice(greedy, at::kByte, device).to(at::kBool);
    tokens = at::where(is_greedy, tokens, sampled);
  }
  SampleResult result{tokens,
                      log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1)};
  if (top > 0) {
    auto [values, ids] = log_probs.topk(std::min<int64_t>(top, vocab), 1);
    result.top_ids = ids;
    result.top_logprobs = values;
  }
  return result;
}

}  // namespace microrl::rollout
