// The plugin entry point.
//
// A plugin is a shared library exporting one alias, `qforge_plugin`, made with
// QFORGE_PLUGIN(...). It returns a plain struct; the host checks the API
// version and the ABI tag before calling anything else, and calls `register_fn`
// with the registry. No exception crosses the boundary: register_fn reports
// failure through its return value and the error buffer.
//
//   static void register_all(qforge::Registry& r) { r.add_pass(...); }
//   QFORGE_PLUGIN("tensor-stats", "1.0.0", register_all)
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>

#include <boost/dll/alias.hpp>

#include "qforge/registry.h"

#define QFORGE_PLUGIN_API_VERSION 1u
#define QFORGE_IR_VERSION \
  2  // bumped when a struct plugins share changes layout (2: PassInfo::needs_reference, Profile v2)

#define QFORGE_STR2_(x) #x
#define QFORGE_STR_(x) QFORGE_STR2_(x)
#if defined(__clang__)
#define QFORGE_COMPILER_TAG_ "clang-" QFORGE_STR_(__clang_major__)
#elif defined(__GNUC__)
#define QFORGE_COMPILER_TAG_ "gcc-" QFORGE_STR_(__GNUC__)
#else
#define QFORGE_COMPILER_TAG_ "unknown"
#endif
#if defined(_LIBCPP_VERSION)
#define QFORGE_STDLIB_TAG_ "libc++-" QFORGE_STR_(_LIBCPP_VERSION)
#elif defined(_GLIBCXX_RELEASE)
#define QFORGE_STDLIB_TAG_ \
  "libstdc++-" QFORGE_STR_(_GLIBCXX_RELEASE) "-cxx11abi" QFORGE_STR_(_GLIBCXX_USE_CXX11_ABI)
#else
#define QFORGE_STDLIB_TAG_ "unknown"
#endif
// What a plugin must share with the host to pass C++ objects: compiler family,
// standard library and its ABI, qforge's IR version.
#define QFORGE_ABI_TAG QFORGE_COMPILER_TAG_ ";" QFORGE_STDLIB_TAG_ ";ir-" QFORGE_STR_(QFORGE_IR_VERSION)

extern "C" {
struct QforgePlugin {
  uint32_t api_version;
  const char* abi_tag;
  const char* name;
  const char* version;
  // 0 on success; otherwise writes a message into `error`.
  int (*register_fn)(qforge::Registry* registry, char* error, size_t error_size);
};
}

namespace qforge::detail {
template <void (*Fn)(Registry&)>
int register_thunk(Registry* registry, char* error, size_t error_size) noexcept {
  try {
    Fn(*registry);
    return 0;
  } catch (const std::exception& e) {
    std::snprintf(error, error_size, "%s", e.what());
  } catch (...) {
    std::snprintf(error, error_size, "unknown exception");
  }
  return 1;
}
}  // namespace qforge::detail

#ifndef QFORGE_PLUGIN_API_VERSION_FOR_BUILD
#define QFORGE_PLUGIN_API_VERSION_FOR_BUILD QFORGE_PLUGIN_API_VERSION
#endif

// A dynamically loaded plugin (one per shared library).
#define QFORGE_PLUGIN(NAME, VERSION, REGISTER)                                                         \
  extern "C" const QforgePlugin* qforge_plugin_entry() {                                               \
    static const QforgePlugin info{QFORGE_PLUGIN_API_VERSION_FOR_BUILD, QFORGE_ABI_TAG, NAME, VERSION, \
                                   &::qforge::detail::register_thunk<REGISTER>};                       \
    return &info;                                                                                      \
  }                                                                                                    \
  BOOST_DLL_ALIAS(qforge_plugin_entry, qforge_plugin)

// A plugin linked into the qforge binary: same struct, its own symbol name.
#define QFORGE_BUILTIN_PLUGIN(IDENT, NAME, VERSION, REGISTER)                                \
  const QforgePlugin* qforge_builtin_##IDENT() {                                             \
    static const QforgePlugin info{QFORGE_PLUGIN_API_VERSION, QFORGE_ABI_TAG, NAME, VERSION, \
                                   &::qforge::detail::register_thunk<REGISTER>};             \
    return &info;                                                                            \
  }
