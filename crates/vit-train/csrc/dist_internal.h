// What dist.cpp, dist_bn.cpp and dist_nccl.cpp share: the process group behind `vit_dist*`,
// error messages without C++ backtraces, and the collective wait that names
// failed ranks.
#pragma once

#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <stdexcept>
#include <string>

#include "shim_error.h"

struct vit_dist {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> group;
  int rank;
  int world;
  std::chrono::milliseconds timeout;
  // NCCL: the CUDA device of this rank, where CPU tensors are staged for a collective; -1 with Gloo.
  int cuda_device;
};

namespace vit_dist_internal {

// c10::Error's what() carries a C++ backtrace: the Rust caller gets the message alone.
inline std::string describe(const std::exception &e) {
  if (const auto *c = dynamic_cast<const c10::Error *>(&e)) {
    return c->what_without_backtrace();
  }
  return e.what();
}

template <typename F>
char *guarded(F &&f) noexcept {
  return vit_shim::guard([&] {
    try {
      f();
    } catch (const c10::Error &e) {
      throw std::runtime_error(describe(e));
    }
  });
}

// Waits for `work` up to the group's timeout; a failure becomes an exception whose
// message names this rank, c10d's reason and the ranks that stopped answering.
void wait_for(vit_dist *d, const c10::intrusive_ptr<c10d::Work> &work, const char *what);

// A ProcessGroupNCCL (dist_nccl.cpp); throws "this build has no NCCL" when built without its headers.
c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store> &store, int rank, int world,
                                            std::chrono::milliseconds timeout);

}  // namespace vit_dist_internal
