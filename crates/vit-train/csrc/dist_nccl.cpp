// The NCCL process group for CUDA tensors (see dist_internal.h). Compiled with
// the CUDA runtime, CCCL and NCCL headers of the venv's nvidia-* packages when
// build.rs finds them (VIT_HAVE_NCCL); without them the backend is a clear error.
#include "dist_internal.h"

#ifdef VIT_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

c10::intrusive_ptr<c10d::Backend> vit_dist_internal::make_nccl(const c10::intrusive_ptr<c10d::Store> &store, int rank,
                                                               int world, std::chrono::milliseconds timeout) {
#ifdef VIT_HAVE_NCCL
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
#else
  (void)store, (void)rank, (void)world, (void)timeout;
  throw std::runtime_error(
      "this build has no NCCL: the CUDA runtime, CCCL and NCCL headers (the venv's nvidia-cuda-runtime, "
      "nvidia-cuda-crt, nvidia-cuda-cccl and nvidia-nccl packages; scripts/setup.sh installs them) were missing "
      "when vit-train was built; use --dist-backend gloo on the CPU");
#endif
}
