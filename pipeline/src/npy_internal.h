// Helpers shared by the dataset readers (npy.cc, npz.cc, dataset.cc).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "qforge/model.h"

namespace qforge {
namespace detail {

// `s` with non-printable bytes escaped (\xNN), cut to about `max_chars`.
std::string printable(std::string_view s, size_t max_chars);

// `blob` itself when its data is aligned to `align` bytes, else an owned copy
// (owned buffers are allocated with new[], aligned for any scalar type).
BlobPtr aligned_blob(BlobPtr blob, uint32_t align);

}  // namespace detail
}  // namespace qforge
