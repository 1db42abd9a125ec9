// Fused Adam/AdamW: one ATen kernel over all parameters instead of ~12 small
// kernels per parameter (see vit_shim.h).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include <vector>

#include "shim_error.h"
#include "tensor_list.h"
#include "vit_shim.h"

extern "C" void vit_shim_free_error(char *message) { std::free(message); }

extern "C" char *vit_fused_adam_step(vit_tensor *const *params, vit_tensor *const *grads, vit_tensor *const *exp_avgs,
                                     vit_tensor *const *exp_avg_sqs, size_t n, vit_tensor *step, double lr,
                                     double beta1, double beta2, double weight_decay, double eps, int decoupled,
                                     vit_tensor *lr_tensor) {
  return vit_shim::guard([&] {
    if (n == 0) {
      return;
    }
    c10::NoGradGuard no_grad;
    using vit_shim::gather;
    auto p = gather(params, n), g = gather(grads, n), m = gather(exp_avgs, n), v = gather(exp_avg_sqs, n);
    // The CPU kernel trusts its inputs: a shape mismatch would read out of bounds.
    for (size_t i = 0; i < n; ++i) {
      TORCH_CHECK(g[i].sizes() == p[i].sizes() && m[i].sizes() == p[i].sizes() && v[i].sizes() == p[i].sizes(),
                  "parameter ", i, " has shape ", p[i].sizes(), ", its gradient ", g[i].sizes(), " and moments ",
                  m[i].sizes(), " ", v[i].sizes());
    }
    // The kernel reads one step tensor per parameter; all share the same count.
    std::vector<at::Tensor> steps(n, *step);
    // amsgrad is off: the kernel requires this list to be empty.
    const std::vector<at::Tensor> no_max;
    if (lr_tensor != nullptr) {
      // The tensor-lr overloads: nothing is read on the host (capturable).
      if (decoupled) {
        at::_fused_adamw_(p, g, m, v, no_max, steps, *lr_tensor, beta1, beta2, weight_decay, eps, false, false);
      } else {
        at::_fused_adam_(p, g, m, v, no_max, steps, *lr_tensor, beta1, beta2, weight_decay, eps, false, false);
      }
    } else if (decoupled) {
      at::_fused_adamw_(p, g, m, v, no_max, steps, lr, beta1, beta2, weight_decay, eps, false, false);
    } else {
      at::_fused_adam_(p, g, m, v, no_max, steps, lr, beta1, beta2, weight_decay, eps, false, false);
    }
  });
}
