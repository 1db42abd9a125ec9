// The tensors behind a C array of tch tensor pointers, shared by every shim file
// that takes a list of tensors.
#pragma once

#include <ATen/ATen.h>

#include <cstddef>
#include <vector>

#include "vit_shim.h"

namespace vit_shim {

// The n tensors as ATen handles (same storage: in-place updates reach the caller's tensors).
inline std::vector<at::Tensor> gather(vit_tensor *const *tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(*tensors[i]);
  }
  return out;
}

}  // namespace vit_shim
