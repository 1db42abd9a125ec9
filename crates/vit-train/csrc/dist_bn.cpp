// SyncBatchNorm (see vit_shim.h): BatchNorm in training mode over the batch of
// every rank, as PyTorch's torch.nn.SyncBatchNorm: the batch statistics are
// all-reduced in the forward pass and the two per-channel gradient sums in the
// backward pass, so W ranks compute what one process does with their union.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <string>
#include <vector>

#include "shim_error.h"
#include "vit_shim.h"
#include "dist_internal.h"

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Sums `t` over ranks in place.
void sum_over_ranks(vit_dist *d, at::Tensor &t) {
  std::vector<at::Tensor> v{t};
  vit_dist_internal::wait_for(d, d->group->allreduce(v), "SyncBatchNorm all-reduce");
}

struct SyncBatchNorm : public torch::autograd::Function<SyncBatchNorm> {
  static at::Tensor forward(AutogradContext *ctx, const at::Tensor &x, const at::Tensor &weight,
                            const at::Tensor &bias, at::Tensor running_mean, at::Tensor running_var, double eps,
                            double momentum, int64_t group) {
    auto *d = reinterpret_cast<vit_dist *>(group);
    const std::vector<int64_t> dims{0, 2, 3};
    const auto shape = std::vector<int64_t>{1, x.size(1), 1, 1};
    // Two passes (mean, then centred squares), as the one-process kernel: no cancellation.
    auto sums = at::cat({x.sum(dims), at::full({1}, static_cast<double>(x.numel() / x.size(1)), x.options())});
    sum_over_ranks(d, sums);
    const auto count = sums[x.size(1)].item<double>();
    const auto mean = sums.narrow(0, 0, x.size(1)) / count;
    const auto centred = x - mean.view(shape);
    auto sq = centred.pow(2).sum(dims);
    sum_over_ranks(d, sq);
    const auto var = sq / count;
    const auto invstd = (var + eps).rsqrt();
    {
      at::NoGradGuard no_grad;
      running_mean.mul_(1 - momentum).add_(mean, momentum);
      running_var.mul_(1 - momentum).add_(var * (count / std::max(count - 1, 1.0)), momentum);
    }
    const auto xhat = centred * invstd.view(shape);
    ctx->save_for_backward({xhat, invstd, weight});
    ctx->saved_data["group"] = group;
    ctx->saved_data["count"] = count;
    return xhat * weight.view(shape) + bias.view(shape);
  }

  static variable_list backward(AutogradContext *ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &xhat = saved[0], &invstd = saved[1], &weight = saved[2];
    auto *d = reinterpret_cast<vit_dist *>(ctx->saved_data["group"].toInt());
    const auto count = ctx->saved_data["count"].toDouble();
    const auto &g = grads[0];
    const std::vector<int64_t> dims{0, 2, 3};
    const auto shape = std::vector<int64_t>{1, xhat.size(1), 1, 1};
    // This rank's sums give the weight and bias gradients (averaged over ranks like every other).
    const auto sum_dy = g.sum(dims), sum_dy_xhat = (g * xhat).sum(dims);
    auto both = at::cat({sum_dy, sum_dy_xhat});
    sum_over_ranks(d, both);
    const auto mean_dy = both.narrow(0, 0, xhat.size(1)) / count;
    const auto mean_dy_xhat = both.narrow(0, xhat.size(1), xhat.size(1)) / count;
    const auto dx = (g - mean_dy.view(shape) - xhat * mean_dy_xhat.view(shape)) * (weight * invstd).view(shape);
    return {dx, sum_dy_xhat, sum_dy, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" char *vit_dist_sync_batch_norm(vit_dist *d, vit_tensor *x, vit_tensor *weight, vit_tensor *bias,
                                          vit_tensor *running_mean, vit_tensor *running_var, double eps,
                                          double momentum, vit_tensor **out) {
  *out = nullptr;
  return vit_dist_internal::guarded([&] {
    TORCH_CHECK(x->dim() == 4, "SyncBatchNorm expects [N, C, H, W], got ", x->sizes());
    auto y = SyncBatchNorm::apply(*x, *weight, *bias, *running_mean, *running_var, eps, momentum,
                                  reinterpret_cast<int64_t>(d));
    *out = new at::Tensor(std::move(y));
  });
}
