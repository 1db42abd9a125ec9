// Autocast switches for mixed-precision training (tch only exposes CUDA autocast;
// this sets it for either device type and picks the lower-precision dtype), and the
// channels-last memory format for the convolutions (tch binds no memory formats).
#include <ATen/autocast_mode.h>

#include "shim_error.h"
#include "vit_shim.h"

extern "C" char *vit_channels_last(vit_tensor *x, vit_tensor **out) {
  *out = nullptr;
  return vit_shim::guard([&] { *out = new at::Tensor(x->contiguous(at::MemoryFormat::ChannelsLast)); });
}

extern "C" char *vit_autocast_set(int cuda, int enabled, int fp16) {
  return vit_shim::guard([&] {
    const auto device = cuda ? at::kCUDA : at::kCPU;
    if (enabled) {
      at::autocast::set_autocast_dtype(device, fp16 ? at::kHalf : at::kBFloat16);
      at::autocast::set_autocast_enabled(device, true);
      at::autocast::increment_nesting();
    } else {
      at::autocast::set_autocast_enabled(device, false);
      // Cached low-precision copies of the weights are stale after the optimiser step.
      if (at::autocast::decrement_nesting() == 0) {
        at::autocast::clear_cache();
      }
    }
  });
}
