// LibTorch as this build links it (common/torch.cmake: the pinned PyPI wheel
// through microrl::torch, compiled with the shared <torch/types.h> precompiled
// header): tensors and autograd work on the CPU, and the results match
// hand-derived values.
#include <ATen/Parallel.h>
#include <torch/types.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <thread>

#include "common/base/passing_thread.h"
#include "gtest/gtest.h"

namespace microrl {
namespace {

TEST(TorchTest, AutogradThroughMatmulAndLogSoftmax) {
  torch::manual_seed(0);
  // y = sum(log_softmax(x W)) for x [2, 3], W [3, 4].
  const torch::Tensor x = torch::tensor({{1.0, 2.0, 3.0}, {0.5, -1.0, 0.0}});
  torch::Tensor w = torch::zeros({3, 4}, torch::requires_grad());
  const torch::Tensor logits = torch::matmul(x, w);  // [2, 4]
  const torch::Tensor y = torch::log_softmax(logits, /*dim=*/-1).sum();
  y.backward();
  // With W = 0 every row is uniform: log_softmax = -log 4, and d/dlogits of
  // sum(log_softmax) is 1 - 4 * softmax = 0, so dW = x^T * 0 = 0.
  EXPECT_NEAR(y.item<double>(), -8.0 * std::log(4.0), 1e-6);
  EXPECT_TRUE(torch::allclose(w.grad(), torch::zeros({3, 4})));

  // Loss picking one target per row: d/dlogits = onehot - softmax.
  torch::Tensor w2 = torch::zeros({3, 4}, torch::requires_grad());
  const torch::Tensor picked = torch::log_softmax(torch::matmul(x, w2), -1)
                                   .select(/*dim=*/1, /*index=*/2)
                                   .sum();
  picked.backward();
  const torch::Tensor dlogits =
      torch::tensor({{-0.25, -0.25, 0.75, -0.25}, {-0.25, -0.25, 0.75, -0.25}});
  EXPECT_TRUE(
      torch::allclose(w2.grad(), torch::matmul(x.t(), dlogits), 1e-6, 1e-6));
}

TEST(TorchTest, Bfloat16MatmulOnCpu) {
  const torch::Tensor a = torch::ones({4, 4}, torch::kBFloat16);
  EXPECT_EQ(torch::matmul(a, a).sum().item<float>(), 64.0f);
}

// Threads of this process, as the kernel lists them.
int64_t ThreadCount() {
  int64_t n = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator("/proc/self/task")) {
    ++n;
  }
  return n;
}

// The thread count once it has come down to `want` (workers of a finished
// team exit after their thread is joined), or what it is after 5 s.
int64_t ThreadCountSettlingAt(int64_t want) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(5);
  int64_t n = ThreadCount();
  while (n != want && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    n = ThreadCount();
  }
  return n;
}

// Why the rollout server and the learner load models through
// RunOnPassingThread: a thread that runs a parallel operator keeps a team of
// OpenMP workers (GNU OpenMP, which the pinned wheel links) for as long as it
// lives; a passing thread takes its team with it.
TEST(TorchTest, PassingThreadTakesItsOpenMpWorkersWithIt) {
  at::set_num_threads(2);
  const torch::Tensor big = torch::ones({1 << 22});
  auto parallel_work = [&] { return (big * 2).sum().item<float>(); };
  const int64_t before = ThreadCount();
  EXPECT_EQ(RunOnPassingThread(parallel_work), 2.0f * (1 << 22));
  EXPECT_EQ(ThreadCountSettlingAt(before), before);

  // The same work on a thread that stays: it and a worker of its own.
  std::promise<void> worked;
  std::promise<void> leave;
  std::thread staying([&] {
    parallel_work();
    worked.set_value();
    leave.get_future().wait();
  });
  worked.get_future().wait();
  EXPECT_GE(ThreadCount(), before + 2);
  leave.set_value();
  staying.join();
  EXPECT_EQ(ThreadCountSettlingAt(before), before);
}

}  // namespace
}  // namespace microrl
