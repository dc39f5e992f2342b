#include "common/model/lora_linear.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <optional>

namespace microrl::model {
namespace {

// LibTorch's MKL operators (registered when it is built with MKL, as the x86
// PyPI wheels are): the weight's packing, and the product with a packed weight.
struct MklOps {
  std::optional<c10::OperatorHandle> pack;
  std::optional<c10::OperatorHandle> linear;
};

const MklOps& Mkl() {
  static const MklOps* const ops = [] {
    auto* found = new MklOps;
    c10::Dispatcher& dispatcher = c10::Dispatcher::singleton();
    found->pack =
        dispatcher.findSchema({"mkl::_mkl_reorder_linear_weight", ""});
    found->linear = dispatcher.findSchema({"mkl::_mkl_linear", ""});
    return found;
  }();
  return *ops;
}

// MKL's packing depends on the product's row count only for its choice of
// kernels; 64 rows (a decode batch) is the shape it was measured at, and the
// packed weight gave the same results at 1 to 2048 rows.
constexpr int64_t kPackRowsHint = 64;

}  // namespace

bool PackedProductsAvailable() {
  return Mkl().pack.has_value() && Mkl().linear.has_value();
}

at::Tensor PackWeight(const at::Tensor& weight, int64_t min_elements) {
  const MklOps& ops = Mkl();
  if (!PackedProductsAvailable() || !weight.device().is_cpu() ||
      weight.scalar_type() != at::kFloat || weight.dim() != 2 ||
      weight.numel() < min_elements) {
    return at::Tensor();
  }
  return ops.pack->typed<at::Tensor(const at::Tensor&, int64_t)>().call(
      weight.contiguous(), kPackRowsHint);
}

int64_t PackedBytes(const at::Tensor& packed) {
  return packed.defined() ? packed.numel() * packed.element_size() : 0;
}

at::Tensor BaseLinear(const at::Tensor& x, const at::Tensor& weight,
                      const at::Tensor& bias, const at::Tensor& packed) {
  const std::optional<at::Tensor> b =
      bias.defined() ? std::optional<at::Tensor>(bias) : std::nullopt;
  if (packed.defined() && x.dim() >= 1 && x.scalar_type() == at::kFloat &&
      x.device().is_cpu() && !at::GradMode::is_enabled()) {
    const int64_t rows = x.size(-1) > 0 ? x.numel() / x.size(-1) : 0;
    if (rows > 0 && rows <= kPackedMaxRows) {
      // batch_size = rows: the operator uses the packed weight only when the
      // two agree (else it falls back to `weight`).
      return Mkl()
          .linear
          ->typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                             const at::Tensor&,
                             const std::optional<at::Tensor>&, int64_t)>()
          .call(x, packed, weight, b, rows);
    }
  }
  return at::linear(x, weight, b);
}

at::Tensor Linear(const at::Tensor& x, const at::Tensor& weight,
                  const at::Tensor& bias, const LoraLinear* lora,
                  const at::Tensor& packed) {
  at::Tensor y = BaseLinear(x, weight, bias, packed);
  if (lora == nullptr) return y;
  const at::ScalarType dtype = x.scalar_type();
  const at::Tensor a =
      lora->a.scalar_type() == dtype ? lora->a : lora->a.to(dtype);
  const at::Tensor b =
      lora->b.scalar_type() == dtype ? lora->b : lora->b.to(dtype);
  // y + scale * (x A^T) B^T with the second matmul, the scale and the sum in
  // one GEMM (addmm on 2-D views): two kernels per adapted layer, not four.
  const at::Tensor xa = at::linear(x, a);
  const int64_t out = y.size(-1);
  return at::addmm(y.reshape({-1, out}), xa.reshape({-1, xa.size(-1)}), b.t(),
                   /*beta=*/1, /*alpha=*/lora->scale)
      .view(y.sizes());
}

std::vector<at::Tensor> FusedLinear(const at::Tensor& x,
                                    const at::Tensor& weight,
                                    const at::Tensor& bias,
                                    const std::vector<int64_t>& sizes,
                                    const std::vector<const LoraLinear*>& lora,
                                    const at::Tensor& fused_a,
                                    const at::Tensor& packed, bool whole) {
  const at::ScalarType dtype = x.scalar_type();
  auto in_dtype = [dtype](const at::Tensor& t) {
    return t.scalar_type() == dtype ? t : t.to(dtype);
  };
  const at::Tensor x2 = x.reshape({-1, x.size(-1)});
  at::Tensor xa;  // [rows, sum of the adapted modules' ranks]
  std::vector<at::Tensor> as;
  for (const LoraLinear* linear : lora) {
    if (linear != nullptr) as.push_back(in_dtype(linear->a));
  }
  if (!as.empty()) {
    const at::Tensor a = fused_a.defined() && !at::GradMode::is_enabled()
                             ? in_dtype(fused_a)
                         : as.size() == 1 ? as.front()
                                          : at::cat(as);
    xa = at::linear(x2, a);
  }
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  std::vector<at::Tensor> outputs;
  // Training, the learner's adapter (its weights require grad), takes this
  // path with or without autograd on, so that a checkpointed layer's
  // recomputation, and scores without grad, run the same kernels as the
  // forward with grad.
  const bool training =
      std::any_of(lora.begin(), lora.end(), [](const LoraLinear* linear) {
        return linear != nullptr && linear->a.requires_grad();
      });
  if (training) {
    // Training: each part is its own product (its rows of the weight), its
    // LoRA term accumulated into it by a second GEMM in place (addmm_ on the
    // fresh product): no pass over the outputs besides the GEMMs', and each
    // part's gradient reaches its GEMMs as it is. (A sum into slices of one
    // product would make autograd copy the whole gradient once per slice;
    // LoRA terms concatenated and added to the product cost a concatenation
    // and a sum over the outputs each way: 5% of (b)'s update.)
    int64_t offset = 0;
    int64_t rank_offset = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const at::Tensor w = weight.narrow(0, offset, sizes[i]).t();
      at::Tensor part = bias.defined()
                            ? at::addmm(bias.narrow(0, offset, sizes[i]), x2, w)
                            : at::mm(x2, w);
      if (lora[i] != nullptr) {
        const int64_t rank = lora[i]->a.size(0);
        part.addmm_(xa.narrow(1, rank_offset, rank), in_dtype(lora[i]->b).t(),
                    /*beta=*/1, /*alpha=*/lora[i]->scale);
        rank_offset += rank;
      }
      shape.back() = sizes[i];
      outputs.push_back(part.view(shape));
      offset += sizes[i];
    }
    if (whole) outputs.push_back(at::cat(outputs, -1));
    return outputs;
  }
  const at::Tensor y = BaseLinear(x, weight, bias, packed);
  const at::Tensor rows = y.view({-1, y.size(-1)});
  int64_t offset = 0;
  int64_t rank_offset = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    at::Tensor part = rows.narrow(1, offset, sizes[i]);
    if (lora[i] != nullptr) {
      // part += scale * (x A^T) B^T: the second matmul, scale and sum in one,
      // in place, so that an output is the same view of y (same strides, same
      // kernels after it) with or without LoRA.
      const int64_t rank = lora[i]->a.size(0);
      part.addmm_(xa.narrow(1, rank_offset, rank), in_dtype(lora[i]->b).t(),
                  /*beta=*/1, /*alpha=*/lora[i]->scale);
      rank_offset += rank;
    }
    shape.back() = sizes[i];
    outputs.push_back(part.view(shape));
    offset += sizes[i];
  }
  if (whole) outputs.push_back(y);  // whose slices the outputs are
  return outputs;
}

std::vector<const LoraLinear*> GroupLora(const LoraAdapter* adapter,
                                         int64_t layer, LoraGroup group) {
  std::vector<const LoraLinear*> lora;
  for (LoraModule module : LoraGroupModules(group)) {
    lora.push_back(adapter == nullptr ? nullptr : adapter->Find(layer, module));
  }
  return lora;
}

const at::Tensor& GroupFusedA(const LoraAdapter* adapter, int64_t layer,
                              LoraGroup group) {
  static const at::Tensor* const kNone = new at::Tensor();
  return adapter == nullptr ? *kNone : adapter->FusedA(layer, group);
}

const LoraLinear* FindLora(const LoraAdapter* adapter, int64_t layer,
                           LoraModule module) {
  return adapter == nullptr ? nullptr : adapter->Find(layer, module);
}

}  // namespace microrl::model
