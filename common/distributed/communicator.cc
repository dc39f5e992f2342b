// The only translation unit that includes c10d's headers. LibTorch's CMake
// config would define these for its users; ours is not used
// (common/torch.cmake), so they are defined here, before any c10d header.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#ifndef USE_DISTRIBUTED
#define USE_DISTRIBUTED
#endif

#include "common/distributed/communicator.h"

#include <ATen/ATen.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef MICRORL_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/logging.h"

namespace microrl::distributed {
namespace {

std::chrono::milliseconds Millis(absl::Duration d) {
  return std::chrono::milliseconds(absl::ToInt64Milliseconds(d));
}

c10d::ReduceOp ToC10d(ReduceOp op) {
  return op == ReduceOp::kMax ? c10d::ReduceOp(c10d::ReduceOp::MAX)
                              : c10d::ReduceOp(c10d::ReduceOp::SUM);
}

// Runs `body`, turning what c10d throws (a timeout, a closed connection) into
// an Unavailable status that names the operation and the rank, and setting
// *failed; once it is set, refuses to run any more.
template <typename F>
absl::Status Guard(const LaunchEnv& launch, absl::string_view what,
                   bool* failed, F&& body) {
  if (*failed) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": a collective failed earlier on this rank"));
  }
  try {
    body();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    *failed = true;
    std::string message = e.what();
    // c10::Error appends a C++ backtrace; the first line says what happened.
    if (const size_t end = message.find('\n'); end != std::string::npos)
      message.resize(end);
    return absl::UnavailableError(absl::StrCat(
        what, " failed on rank ", launch.rank, " of ", launch.world_size,
        " (a rank died, hung or could not be reached): ", message));
  }
}

}  // namespace

struct Communicator::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  const char* name = "gloo";
};

Communicator::Communicator(const LaunchEnv& launch,
                           const CommunicatorOptions& options,
                           std::unique_ptr<Impl> impl)
    : launch_(launch), options_(options), impl_(std::move(impl)) {}

Communicator::~Communicator() = default;

const char* Communicator::backend() const { return impl_->name; }

at::Device Communicator::device() const {
  return options_.cuda
             ? at::Device(at::kCUDA,
                          static_cast<c10::DeviceIndex>(options_.cuda_device))
             : at::Device(at::kCPU);
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Create(
    const LaunchEnv& launch, const CommunicatorOptions& options) {
  if (launch.world_size < 1 || launch.rank < 0 ||
      launch.rank >= launch.world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad launch: rank ", launch.rank, " of ", launch.world_size));
  }
  if (launch.world_size > 1 &&
      (launch.master_addr.empty() || launch.master_port <= 0)) {
    return absl::InvalidArgumentError(
        "no rendezvous address (MASTER_ADDR, MASTER_PORT)");
  }
  auto impl = std::make_unique<Impl>();
  const std::string where =
      absl::StrCat(launch.master_addr, ":", launch.master_port);
  bool failed = false;
  absl::Status joined =
      Guard(launch, "the rendezvous at " + where, &failed, [&] {
        c10d::TCPStoreOptions store_options;
        store_options.port = static_cast<uint16_t>(launch.master_port);
        // Under torchrun the agent hosts the store; otherwise rank 0 does.
        store_options.isServer = launch.rank == 0 && !launch.agent_store;
        if (store_options.isServer)
          store_options.numWorkers = launch.world_size;
        store_options.waitWorkers = false;
        store_options.timeout = Millis(options.timeout);
        c10::intrusive_ptr<c10d::Store> store;
        if (launch.world_size == 1) {
          // One rank: a store of its own on a free port.
          store_options.isServer = true;
          store_options.port = 0;
          store =
              c10::make_intrusive<c10d::TCPStore>("127.0.0.1", store_options);
        } else {
          store = c10::make_intrusive<c10d::TCPStore>(launch.master_addr,
                                                      store_options);
        }
        // Keys of one torchrun attempt never meet those of another (a restarted
        // job reuses the agent's store).
        impl->store = c10::make_intrusive<c10d::PrefixStore>(
            absl::StrCat("/microrl/attempt_", launch.restart_count, "/"),
            store);
        if (options.cuda) {
#ifdef MICRORL_WITH_NCCL
          c10::cuda::set_device(
              static_cast<c10::DeviceIndex>(options.cuda_device));
          auto nccl = c10d::ProcessGroupNCCL::Options::create();
          nccl->timeout = Millis(options.timeout);
          impl->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(
              impl->store, launch.rank, launch.world_size, nccl);
          impl->name = "nccl";
#else
      throw std::runtime_error("this build has no NCCL");
#endif
        } else {
          // Options::create_default picks the network device
          // (GLOO_SOCKET_IFNAME, else the host name's address, else loopback)
          // inside LibTorch.
          auto gloo = c10d::ProcessGroupGloo::Options::create_default(
              Millis(options.timeout));
          impl->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(
              impl->store, launch.rank, launch.world_size, gloo);
          impl->name = "gloo";
        }
      });
  if (!joined.ok()) return joined;
  std::unique_ptr<Communicator> communicator(
      new Communicator(launch, options, std::move(impl)));
  if (absl::Status s = communicator->SelfTest(); !s.ok()) return s;
  MRL_LOG(INFO) << "rank " << launch.rank << " of " << launch.world_size
                << " joined " << where << " (" << communicator->backend()
                << ")";
  return communicator;
}

absl::Status Communicator::AllReduce(absl::Span<const at::Tensor> tensors,
                                     ReduceOp op) {
  if (tensors.empty()) return absl::OkStatus();
  // Buckets: runs of tensors of one dtype and device, up to bucket_bytes each
  // (a larger tensor is a bucket alone).
  struct Bucket {
    size_t begin = 0, end = 0;
    at::Tensor flat;  // [sum of numels] when it holds more than one tensor
  };
  std::vector<Bucket> buckets;
  int64_t bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    if (!t.is_contiguous()) {
      return absl::InvalidArgumentError(
          absl::StrCat("all-reduce: tensor ", i, " is not contiguous"));
    }
    const int64_t size = t.numel() * static_cast<int64_t>(t.element_size());
    const bool fits =
        !buckets.empty() &&
        tensors[buckets.back().begin].scalar_type() == t.scalar_type() &&
        tensors[buckets.back().begin].device() == t.device() &&
        bytes + size <= options_.bucket_bytes;
    if (!fits) {
      buckets.push_back({i, i, {}});
      bytes = 0;
    }
    buckets.back().end = i + 1;
    bytes += size;
  }
  return Guard(launch_, "all-reduce", &failed_, [&] {
    c10d::AllreduceOptions reduce;
    reduce.reduceOp = ToC10d(op);
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    for (Bucket& b : buckets) {
      std::vector<at::Tensor> one;
      if (b.end - b.begin == 1) {
        one.push_back(tensors[b.begin]);
      } else {
        std::vector<at::Tensor> flat;
        for (size_t i = b.begin; i < b.end; ++i)
          flat.push_back(tensors[i].view({-1}));
        b.flat = at::cat(flat);
        one.push_back(b.flat);
      }
      works.push_back(impl_->backend->allreduce(one, reduce));
    }
    for (size_t k = 0; k < works.size(); ++k) {
      works[k]->wait();
      const Bucket& b = buckets[k];
      if (!b.flat.defined()) continue;
      int64_t offset = 0;
      for (size_t i = b.begin; i < b.end; ++i) {
        const int64_t n = tensors[i].numel();
        tensors[i].view({-1}).copy_(b.flat.narrow(0, offset, n));
        offset += n;
      }
    }
  });
}

absl::Status Communicator::Broadcast(absl::Span<const at::Tensor> tensors,
                                     int root) {
  if (root < 0 || root >= launch_.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast: no rank ", root));
  }
  return Guard(launch_, "broadcast", &failed_, [&] {
    c10d::BroadcastOptions broadcast;
    broadcast.rootRank = root;
    for (const at::Tensor& t : tensors) {
      std::vector<at::Tensor> one = {t};
      impl_->backend->broadcast(one, broadcast)->wait();
    }
  });
}

absl::Status Communicator::Barrier(std::optional<absl::Duration> timeout) {
  return Guard(launch_, "barrier", &failed_, [&] {
    c10d::BarrierOptions barrier;
    if (timeout.has_value()) barrier.timeout = Millis(*timeout);
    if (options_.cuda) barrier.device_ids = {options_.cuda_device};
    impl_->backend->barrier(barrier)->wait();
  });
}

absl::Status Communicator::SelfTest() {
  const at::TensorOptions on = at::TensorOptions().device(device());
  const int64_t n = launch_.world_size;
  const int64_t r = launch_.rank;
  // Integers: rank + 1 summed is n(n+1)/2; floats: exact small integers
  // spread over 1,000 elements and two dtypes, in one bucket and apart.
  at::Tensor ints = at::full({3}, r + 1, on.dtype(at::kLong));
  at::Tensor floats = at::arange(1000, on.dtype(at::kFloat)) * (r + 1);
  at::Tensor maxes =
      at::full({2}, static_cast<double>(r), on.dtype(at::kDouble));
  if (absl::Status s = AllReduce({ints, floats}); !s.ok()) return s;
  if (absl::Status s = AllReduce({maxes}, ReduceOp::kMax); !s.ok()) return s;
  at::Tensor root = at::full({4}, r == 0 ? 7.0 : -1.0, on.dtype(at::kFloat));
  if (absl::Status s = Broadcast({root}, 0); !s.ok()) return s;
  const double sum = static_cast<double>(n * (n + 1) / 2);
  const bool ok =
      at::equal(ints.cpu(), at::full({3}, n * (n + 1) / 2, at::kLong)) &&
      at::equal(floats.cpu(), at::arange(1000, at::kFloat) * sum) &&
      at::equal(maxes.cpu(),
                at::full({2}, static_cast<double>(n - 1), at::kDouble)) &&
      at::equal(root.cpu(), at::full({4}, 7.0, at::kFloat));
  if (!ok) {
    return absl::InternalError(absl::StrCat(
        "the ", backend(), " self-test all-reduce gave wrong values on rank ",
        r, " of ", n,
        ": the collective library does not agree with its headers (see "
        "docs/scaling.md)"));
  }
  return absl::OkStatus();
}

}  // namespace microrl::distributed
