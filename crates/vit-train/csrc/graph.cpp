// CUDA-graph capture and replay of a whole training step (see vit_shim.h), after
// PyTorch's "CUDA graphs in C++" recipe: work runs on a side stream (warm-up and
// capture may not use the default stream), at::cuda::CUDAGraph records it into
// its private memory pool, and replay re-launches every kernel with one call.
// Compiled with the CUDA runtime headers when build.rs finds them
// (VIT_HAVE_CUDA_GRAPH); without them every call is a clear error, and the
// Rust side then trains eagerly.
#include <stdexcept>

#include "shim_error.h"
#include "vit_shim.h"

#ifdef VIT_HAVE_CUDA_GRAPH
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>

struct vit_graph {
  explicit vit_graph(c10::DeviceIndex device) : side(c10::cuda::getStreamFromPool(false, device)) {}
  c10::cuda::CUDAStream side;
  // Set while work goes to the side stream; restores the previous stream when reset. The generic
  // guard (through c10's device-guard registry): CUDAStreamGuard's inline code would need libcudart.
  std::optional<c10::StreamGuard> on_side;
  at::cuda::CUDAGraph graph;
};

namespace {
// `waiter` waits for the work queued so far on `done` (no host wait). A c10::Event,
// through c10_cuda's guard, so this file calls no CUDA runtime function itself.
void order(const c10::cuda::CUDAStream &done, const c10::cuda::CUDAStream &waiter) {
  c10::Event event(c10::DeviceType::CUDA);
  event.record(done.unwrap());
  event.block(waiter.unwrap());
}
}  // namespace

extern "C" char *vit_graph_new(int device, vit_graph **out) {
  return vit_shim::guard([&] { *out = new vit_graph(static_cast<c10::DeviceIndex>(device)); });
}

extern "C" char *vit_graph_side_stream(vit_graph *g, int enter) {
  return vit_shim::guard([&] {
    if (enter) {
      TORCH_CHECK(!g->on_side.has_value(), "already on the side stream");
      order(c10::cuda::getCurrentCUDAStream(g->side.device_index()), g->side);
      g->on_side.emplace(g->side.unwrap());
    } else {
      TORCH_CHECK(g->on_side.has_value(), "not on the side stream");
      g->on_side.reset();
      order(g->side, c10::cuda::getCurrentCUDAStream(g->side.device_index()));
    }
  });
}

extern "C" char *vit_graph_capture(vit_graph *g, int begin) {
  return vit_shim::guard([&] {
    TORCH_CHECK(g->on_side.has_value(), "capture runs on the side stream");
    if (begin) {
      // As torch.cuda.graph: nothing of the warm-up may still be running when capture starts.
      c10::cuda::device_synchronize();
      // The default CUDA generator registers itself with the graph in capture_begin, so dropout
      // draws new numbers on every replay (philox offsets advanced per replay).
      g->graph.capture_begin();
    } else {
      g->graph.capture_end();
    }
  });
}

extern "C" char *vit_graph_replay(vit_graph *g) {
  return vit_shim::guard([&] { g->graph.replay(); });
}

extern "C" void vit_graph_free(vit_graph *g) { delete g; }

#else

struct vit_graph {};

namespace {
[[noreturn]] void no_cuda() {
  throw std::runtime_error(
      "this build has no CUDA graphs: the CUDA runtime headers (the venv's nvidia-cuda-runtime package; "
      "scripts/setup.sh installs it) were missing when vit-train was built");
}
}  // namespace

extern "C" char *vit_graph_new(int, vit_graph **) {
  return vit_shim::guard([] { no_cuda(); });
}
extern "C" char *vit_graph_side_stream(vit_graph *, int) {
  return vit_shim::guard([] { no_cuda(); });
}
extern "C" char *vit_graph_capture(vit_graph *, int) {
  return vit_shim::guard([] { no_cuda(); });
}
extern "C" char *vit_graph_replay(vit_graph *) {
  return vit_shim::guard([] { no_cuda(); });
}
extern "C" void vit_graph_free(vit_graph *g) { delete g; }

#endif
