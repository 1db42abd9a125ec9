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
// bias correction, not changed). When lr_tensor is not NULL the learning rate is
// read from it (a 0-dim tensor on the parameters' device) and `lr` is ignored.
char *vit_fused_adam_step(vit_tensor *const *params, vit_tensor *const *grads, vit_tensor *const *exp_avgs,
                          vit_tensor *const *exp_avg_sqs, size_t n, vit_tensor *step, double lr, double beta1,
                          double beta2, double weight_decay, double eps, int decoupled, vit_tensor *lr_tensor);

// ---- collective communication (dist.cpp) ----

// A process group of `world` ranks over c10d: a TCPStore at master_addr:master_port
// (served by rank 0, or by the launcher when store_is_client != 0), and Gloo, or
// NCCL on CUDA device cuda_device when that is >= 0.
typedef struct vit_dist vit_dist;

// Joins the group as `rank`; every store wait and collective gives up after
// timeout_s seconds. On success *out is the group (free with vit_dist_destroy).
char *vit_dist_init(const char *master_addr, int master_port, int rank, int world, int store_is_client,
                    double timeout_s, int cuda_device, vit_dist **out);

// Sums (average != 0: averages) the n tensors, all of one dtype and device, across
// ranks in place, as one collective over their flattened concatenation.
char *vit_dist_all_reduce(vit_dist *d, vit_tensor *const *tensors, size_t n, int average);

// Overwrites the n tensors with rank `root`'s, as one collective.
char *vit_dist_broadcast(vit_dist *d, vit_tensor *const *tensors, size_t n, int root);

// Waits until every rank arrives; rank 0 names the ranks that did not.
char *vit_dist_barrier(vit_dist *d);

// Leaves the group and frees it.
void vit_dist_destroy(vit_dist *d);

// ---- SyncBatchNorm (dist_bn.cpp) ----

// Training-mode BatchNorm of x [N, C, H, W] over the batches of all ranks of d
// (statistics all-reduced in forward, gradient sums in backward), with affine
// weight and bias [C]; updates running_mean / running_var (unbiased variance over
// all ranks' images) with `momentum`. *out is a new tensor owned by the caller.
char *vit_dist_sync_batch_norm(vit_dist *d, vit_tensor *x, vit_tensor *weight, vit_tensor *bias,
                               vit_tensor *running_mean, vit_tensor *running_var, double eps, double momentum,
                               vit_tensor **out);

// ---- mixed precision (amp.cpp) ----

// Turns autocast on (enabled = 1: to float16 when fp16 = 1, else bfloat16) or off
// for CUDA (cuda = 1) or CPU operations; turning it off drops the cast-weight cache.
char *vit_autocast_set(int cuda, int enabled, int fp16);

// A differentiable copy of the 4-D tensor x in the channels-last (NHWC) memory
// format: the convolutions that follow run oneDNN's / cuDNN's NHWC kernels.
// *out is a new tensor owned by the caller.
char *vit_channels_last(vit_tensor *x, vit_tensor **out);

// ---- CUDA graphs (graph.cpp) ----

// One captured training step on CUDA device `device`, with its own side stream
// and private memory pool. Builds without the CUDA headers return an error from every call.
typedef struct vit_graph vit_graph;

// *out is a new, empty graph (free with vit_graph_free).
char *vit_graph_new(int device, vit_graph **out);

// enter = 1: later work goes to the side stream, after the work queued so far on
// the current one; enter = 0: back to the previous stream, which waits for the side stream's work.
char *vit_graph_side_stream(vit_graph *g, int enter);

// begin = 1: waits for the device, then starts capturing the side stream's work
// (none of it runs); begin = 0: ends the capture and instantiates the graph.
char *vit_graph_capture(vit_graph *g, int begin);

// Launches the captured work again on the current stream.
char *vit_graph_replay(vit_graph *g);

// Frees the graph and its memory pool.
void vit_graph_free(vit_graph *g);

#ifdef __cplusplus
}
#endif
