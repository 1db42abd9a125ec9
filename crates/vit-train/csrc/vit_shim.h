// The C API of vit-train's C++ shim (see README.md). Tensors are tch's
// `at::Tensor*` (`tch::Tensor::as_ptr`). Functions returning `char*` return NULL
// on success, else an error message the caller frees with `vit_shim_free_error`.
#pragma once

#include <stddef.h>

#ifdef __cplusplus
namespace at {
class Tensor;
}
typedef at::Tensor vit_tensor;
extern "C" {
#else
typedef struct vit_tensor vit_tensor;
#endif

// Frees an error message returned by any shim function.
void vit_shim_free_error(char *message);

// ---- optimiser (optim.cpp) ----

// One Adam (decoupled = 0: L2 decay added to the gradient) or AdamW (decoupled = 1)
// step over n parameters with their gradients and moments, in place, as one fused
// ATen kernel. `step` is a float tensor holding the 1-based step count (read for
// bias correction, not changed).
char *vit_fused_adam_step(vit_tensor *const *params, vit_tensor *const *grads, vit_tensor *const *exp_avgs,
                          vit_tensor *const *exp_avg_sqs, size_t n, vit_tensor *step, double lr, double beta1,
                          double beta2, double weight_decay, double eps, int decoupled);

// ---- mixed precision (amp.cpp) ----

// Turns autocast on (enabled = 1: to float16 when fp16 = 1, else bfloat16) or off
// for CUDA (cuda = 1) or CPU operations; turning it off drops the cast-weight cache.
char *vit_autocast_set(int cuda, int enabled, int fp16);

#ifdef __cplusplus
}
#endif
