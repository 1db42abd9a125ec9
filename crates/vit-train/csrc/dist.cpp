// Collective communication over PyTorch's own c10d (see vit_shim.h): a TCPStore
// rendezvous and a Gloo process group, with bucket-sized all-reduce and broadcast
// of tensor lists (flattened into one buffer: one collective per call).
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dist_internal.h"
#include "shim_error.h"
#include "tensor_list.h"
#include "vit_shim.h"

using vit_dist_internal::describe;
using vit_dist_internal::guarded;
using vit_dist_internal::wait_for;

namespace {

// One contiguous buffer holding every tensor (all of one dtype and device).
at::Tensor flatten(const std::vector<at::Tensor> &ts) {
  std::vector<at::Tensor> flat;
  flat.reserve(ts.size());
  for (const auto &t : ts) {
    TORCH_CHECK(t.scalar_type() == ts[0].scalar_type() && t.device() == ts[0].device(),
                "tensors of one collective must share dtype and device: ", t.scalar_type(), " on ", t.device(),
                " vs ", ts[0].scalar_type(), " on ", ts[0].device());
    flat.push_back(t.reshape({-1}));
  }
  return at::cat(flat);
}

// NCCL reduces CUDA tensors only: CPU ones (counters, evaluation sums) go through this rank's GPU.
at::Tensor staged(vit_dist *d, at::Tensor flat) {
  if (d->cuda_device >= 0 && !flat.is_cuda()) {
    return flat.to(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(d->cuda_device)));
  }
  return flat;
}

void unflatten(const at::Tensor &flat, std::vector<at::Tensor> &ts) {
  int64_t offset = 0;
  for (auto &t : ts) {
    const auto n = t.numel();
    t.copy_(flat.narrow(0, offset, n).view(t.sizes()));
    offset += n;
  }
}

// Runs the collective `op` on one (staged) flat buffer of the n tensors, and copies
// the result back into them: one collective per call, whatever n is.
template <typename Op>
void on_flat(vit_dist *d, vit_tensor *const *tensors, size_t n, Op op) {
  if (n == 0) {
    return;
  }
  c10::NoGradGuard no_grad;
  auto ts = vit_shim::gather(tensors, n);
  std::vector<at::Tensor> flat{staged(d, flatten(ts))};
  op(flat);
  unflatten(flat[0], ts);
}

// After a failed collective every surviving rank checks in at the store; the ranks
// that have not within a few seconds are named as the failed ones (Gloo's own
// message names only a peer address).
std::string absent_ranks(vit_dist *d) {
  const auto key = [](int r) { return "failed-collective/" + std::to_string(r); };
  try {
    d->store->set(key(d->rank), std::vector<uint8_t>{1});
    const auto deadline = std::chrono::steady_clock::now() + std::min(d->timeout, std::chrono::milliseconds(5000));
    std::vector<int> absent;
    do {
      absent.clear();
      for (int r = 0; r < d->world; ++r) {
        if (!d->store->check({key(r)})) {
          absent.push_back(r);
        }
      }
      if (absent.empty()) {
        return "";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } while (std::chrono::steady_clock::now() < deadline);
    std::string names;
    for (int r : absent) {
      names += (names.empty() ? "" : ", ") + std::to_string(r);
    }
    return "; failed rank" + std::string(absent.size() > 1 ? "s " : " ") + names + " (not answering after the failure)";
  } catch (const std::exception &) {
    // The store is served by rank 0 unless torchrun's agent serves it.
    return "; the store is unreachable too: rank 0 failed (or the launcher's store is gone)";
  }
}

}  // namespace

void vit_dist_internal::wait_for(vit_dist *d, const c10::intrusive_ptr<c10d::Work> &work, const char *what) {
  try {
    work->wait(d->timeout);
  } catch (const std::exception &e) {
    const auto message = describe(e);
    throw std::runtime_error(std::string(what) + " on rank " + std::to_string(d->rank) + " of " +
                             std::to_string(d->world) + " failed: " + message + absent_ranks(d));
  }
}

extern "C" char *vit_dist_init(const char *master_addr, int master_port, int rank, int world, int store_is_client,
                               double timeout_s, int cuda_device, vit_dist **out) {
  *out = nullptr;
  return guarded([&] {
    TORCH_CHECK(world >= 1 && rank >= 0 && rank < world, "rank ", rank, " is not in a world of size ", world);
    TORCH_CHECK(master_port > 0 && master_port < 65536, "MASTER_PORT ", master_port, " is not a TCP port");
    auto d = std::make_unique<vit_dist>();
    d->rank = rank;
    d->world = world;
    d->cuda_device = cuda_device;
    d->timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000.0));
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(master_port);
    // Under torchrun's agent store the launcher already serves the store: every rank is a client.
    opts.isServer = rank == 0 && !store_is_client;
    opts.numWorkers = store_is_client ? std::nullopt : std::optional<std::size_t>(world);
    opts.waitWorkers = !store_is_client;
    opts.timeout = d->timeout;
    c10::intrusive_ptr<c10d::Store> tcp;
    try {
      tcp = c10::make_intrusive<c10d::TCPStore>(master_addr, opts);
    } catch (const std::exception &e) {
      throw std::runtime_error(std::string("rendezvous at ") + master_addr + ":" + std::to_string(master_port) +
                               (opts.isServer ? " (serving the store: is the port in use?)"
                                              : " (connecting to rank 0's store: is MASTER_ADDR right?)") +
                               " failed: " + describe(e));
    }
    d->store = c10::make_intrusive<c10d::PrefixStore>("vit-train/", tcp);
    if (cuda_device >= 0) {
      d->group = vit_dist_internal::make_nccl(d->store, rank, world, d->timeout);
    } else {
      auto options = c10d::ProcessGroupGloo::Options::create_default(d->timeout);
      d->group = c10::make_intrusive<c10d::ProcessGroupGloo>(d->store, rank, world, options);
    }
    *out = d.release();
  });
}

extern "C" char *vit_dist_all_reduce(vit_dist *d, vit_tensor *const *tensors, size_t n, int average) {
  return guarded([&] {
    on_flat(d, tensors, n, [&](std::vector<at::Tensor> &flat) {
      // Gloo has no AVG: sum, then divide by the world size.
      wait_for(d, d->group->allreduce(flat), "all-reduce");
      if (average) {
        flat[0].div_(d->world);
      }
    });
  });
}

extern "C" char *vit_dist_broadcast(vit_dist *d, vit_tensor *const *tensors, size_t n, int root) {
  return guarded([&] {
    on_flat(d, tensors, n, [&](std::vector<at::Tensor> &flat) {
      c10d::BroadcastOptions opts;
      opts.rootRank = root;
      wait_for(d, d->group->broadcast(flat, opts), "broadcast");
    });
  });
}

extern "C" char *vit_dist_barrier(vit_dist *d) {
  return guarded([&] {
    c10d::BarrierOptions opts;
    opts.timeout = d->timeout;
    // Rank 0 names the ranks that did not arrive; the others learn of a failure from rank 0.
    d->group->monitoredBarrier(opts, true);
  });
}

// Shuts the backend down before releasing it, as destroy_process_group() does:
// NCCL warns (and may leak its communicators) when a group is only destructed.
// A failing shutdown (a peer already gone) must not keep the process from exiting.
extern "C" void vit_dist_destroy(vit_dist *d) {
  if (d != nullptr && d->group) {
    try {
      d->group->shutdown();
    } catch (const std::exception &) {
    }
  }
  delete d;
}
