// Image samples: decode with stb_image, resize with stb_image_resize, then
// centre crop, channel order, scale/mean/std, layout and dtype
// (docs/manifest.md, "Image datasets").
#include <stb/stb_image.h>
#include <stb/stb_image_resize.h>

#include <fmt/format.h>
#include <cmath>
#include <cstring>
#include <memory>

#include "qforge/dataset.h"
#include "qforge/half.h"
#include "qforge/status.h"

namespace qforge {

namespace {

std::string join(const std::vector<double>& v) {
  std::string s;
  for (double x : v) s += (s.empty() ? "" : ",") + fmt::format("{:.17g}", x);
  return s;
}

struct Pixels {
  int w = 0, h = 0, c = 0;
  std::vector<float> v;  // h * w * c, values 0..255
};

// stb's filter for an interpolation name (nearest is done by index mapping).
stbir_filter filter_of(const std::string& interpolation) {
  if (interpolation == "bicubic") return STBIR_FILTER_CATMULLROM;
  if (interpolation == "area") return STBIR_FILTER_BOX;
  return STBIR_FILTER_TRIANGLE;  // bilinear
}

Pixels resize(const Pixels& in, int w, int h, const std::string& interpolation, const std::string& path) {
  Pixels out;
  out.w = w, out.h = h, out.c = in.c;
  out.v.resize(static_cast<size_t>(w) * h * in.c);
  if (interpolation == "nearest") {
    // Source pixel for each destination pixel: floor((x + 0.5) * in / out).
    for (int y = 0; y < h; ++y) {
      const int sy = std::min(in.h - 1, static_cast<int>((y + 0.5) * in.h / h));
      for (int x = 0; x < w; ++x) {
        const int sx = std::min(in.w - 1, static_cast<int>((x + 0.5) * in.w / w));
        std::memcpy(&out.v[(static_cast<size_t>(y) * w + x) * in.c],
                    &in.v[(static_cast<size_t>(sy) * in.w + sx) * in.c], sizeof(float) * in.c);
      }
    }
    return out;
  }
  const stbir_filter f = filter_of(interpolation);
  if (!stbir_resize_float_generic(in.v.data(), in.w, in.h, 0, out.v.data(), w, h, 0, in.c,
                                  STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, f, STBIR_COLORSPACE_LINEAR,
                                  nullptr))
    throw Error(path + ": resizing to " + std::to_string(w) + "x" + std::to_string(h) + " failed");
  return out;
}

}  // namespace

std::string ImagePreprocess::canonical() const {
  return fmt::format(
      "resize={}x{} shorter={} interp={} crop={}x{} channels={} layout={} scale={:.17g} mean=[{}] std=[{}] "
      "dtype={} "
      "batch={}",
      resize_h, resize_w, resize_shorter, interpolation, crop_h, crop_w, channels, layout, scale, join(mean),
      join(std), dtype, batch);
}

Array load_image(const std::string& path, const ImagePreprocess& p) {
  const int want = p.channels == "gray" ? 1 : 3;
  int w = 0, h = 0, n = 0;
  std::unique_ptr<unsigned char, void (*)(void*)> raw(stbi_load(path.c_str(), &w, &h, &n, want),
                                                      stbi_image_free);
  if (!raw) {
    const char* why = stbi_failure_reason();
    throw Error(path + ": cannot decode the image (" + (why ? why : "unknown reason") +
                "); image datasets take PNG, JPEG, BMP, TGA, GIF or PNM files");
  }
  if (w <= 0 || h <= 0) throw Error(path + ": the image is empty");
  Pixels px;
  px.w = w, px.h = h, px.c = want;
  px.v.assign(raw.get(), raw.get() + static_cast<size_t>(w) * h * want);
  raw.reset();

  // Resize: to an exact size, or the shorter side to a length (rounded).
  if (p.resize_h > 0 && p.resize_w > 0) {
    px = resize(px, static_cast<int>(p.resize_w), static_cast<int>(p.resize_h), p.interpolation, path);
  } else if (p.resize_shorter > 0) {
    const double k = static_cast<double>(p.resize_shorter) / std::min(px.w, px.h);
    const int nw =
        px.w <= px.h ? static_cast<int>(p.resize_shorter) : static_cast<int>(std::lround(px.w * k));
    const int nh = px.h < px.w ? static_cast<int>(p.resize_shorter) : static_cast<int>(std::lround(px.h * k));
    px = resize(px, std::max(1, nw), std::max(1, nh), p.interpolation, path);
  }
  // Centre crop (the top-left corner rounds down, as torchvision's CenterCrop does).
  int x0 = 0, y0 = 0, cw = px.w, ch = px.h;
  if (p.crop_h > 0 && p.crop_w > 0) {
    if (p.crop_w > px.w || p.crop_h > px.h)
      throw Error(
          fmt::format("{}: centre crop {}x{} is larger than the image ({}x{} after resizing); resize first",
                      path, p.crop_h, p.crop_w, px.h, px.w));
    cw = static_cast<int>(p.crop_w), ch = static_cast<int>(p.crop_h);
    x0 = (px.w - cw) / 2, y0 = (px.h - ch) / 2;
  }
  const int C = px.c;
  auto per_channel = [&](const std::vector<double>& v, int c, double dflt) {
    return v.empty() ? dflt : v.size() == 1 ? v[0] : v.at(static_cast<size_t>(c));
  };
  Array a;
  a.source = path;
  a.type = p.dtype == "float16" ? ElemType::F16 : p.dtype == "uint8" ? ElemType::U8 : ElemType::F32;
  const bool nchw = p.layout == "nchw";
  if (p.batch) a.shape.push_back(1);
  if (nchw)
    a.shape.insert(a.shape.end(), {C, ch, cw});
  else
    a.shape.insert(a.shape.end(), {ch, cw, C});
  const size_t count = static_cast<size_t>(C) * ch * cw;
  const size_t elem = a.type == ElemType::F32 ? 4 : a.type == ElemType::F16 ? 2 : 1;
  std::vector<uint8_t> bytes(count * elem);
  for (int y = 0; y < ch; ++y)
    for (int x = 0; x < cw; ++x)
      for (int c = 0; c < C; ++c) {
        const int src_c = p.channels == "bgr" ? C - 1 - c : c;
        const float v = px.v[(static_cast<size_t>(y + y0) * px.w + (x + x0)) * C + src_c];
        const size_t idx =
            nchw ? (static_cast<size_t>(c) * ch + y) * cw + x : (static_cast<size_t>(y) * cw + x) * C + c;
        if (a.type == ElemType::U8) {
          bytes[idx] = static_cast<uint8_t>(std::lround(std::min(255.0f, std::max(0.0f, v))));
          continue;
        }
        const double norm = (v * p.scale - per_channel(p.mean, c, 0.0)) / per_channel(p.std, c, 1.0);
        if (a.type == ElemType::F32) {
          const float f = static_cast<float>(norm);
          std::memcpy(&bytes[idx * 4], &f, 4);
        } else {
          const uint16_t hv = fp32_to_fp16(static_cast<float>(norm));
          std::memcpy(&bytes[idx * 2], &hv, 2);
        }
      }
  a.data = make_blob(std::move(bytes));
  return a;
}

}  // namespace qforge
