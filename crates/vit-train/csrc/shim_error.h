// Turns a C++ exception into the error string the C API returns.
#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>

namespace vit_shim {

// Runs f; NULL when it returns, else a malloc'd copy of the exception's message.
template <typename F>
char *guard(F &&f) noexcept {
  try {
    f();
    return nullptr;
  } catch (const std::exception &e) {
    return strdup(e.what());
  } catch (...) {
    return strdup("unknown C++ exception");
  }
}

}  // namespace vit_shim
