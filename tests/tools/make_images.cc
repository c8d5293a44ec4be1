// make_images DIR COUNT [WIDTH HEIGHT [SEED]]: writes COUNT deterministic RGB
// PNG images (img-000.png, ...) for calibration and evaluation datasets in the
// quickstart, tests and benchmarks. Each image is a smooth two-colour gradient
// with a few filled rectangles and discs and mild noise, so the activations
// it gives a network have the spread of natural images rather than of
// uniform noise. The same arguments give byte-identical files.
#include <stb/stb_image_write.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

namespace {

struct Rng {
  uint64_t s;
  uint32_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return static_cast<uint32_t>(s >> 32);
  }
  float unit() { return static_cast<float>(next() & 0xFFFFFF) / 16777216.0f; }  // [0, 1)
  int below(int n) { return static_cast<int>(next() % static_cast<uint32_t>(n)); }
};

uint8_t clamp8(float v) { return static_cast<uint8_t>(std::lround(std::fmin(255.0f, std::fmax(0.0f, v)))); }

std::vector<uint8_t> draw(int w, int h, Rng& rng) {
  std::vector<float> px(static_cast<size_t>(w) * h * 3);
  float a[3], b[3];
  for (int c = 0; c < 3; ++c) a[c] = 255 * rng.unit(), b[c] = 255 * rng.unit();
  const float angle = 6.2831853f * rng.unit();
  const float dx = std::cos(angle), dy = std::sin(angle);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const float t = 0.5f + 0.5f * ((x / float(w) - 0.5f) * dx + (y / float(h) - 0.5f) * dy);
      for (int c = 0; c < 3; ++c) px[(static_cast<size_t>(y) * w + x) * 3 + c] = a[c] + (b[c] - a[c]) * t;
    }
  const int shapes = 2 + rng.below(5);
  for (int s = 0; s < shapes; ++s) {
    float colour[3];
    for (float& c : colour) c = 255 * rng.unit();
    const int cx = rng.below(w), cy = rng.below(h);
    const int rx = 1 + rng.below(w / 3 + 1), ry = 1 + rng.below(h / 3 + 1);
    const bool disc = rng.below(2) == 1;
    for (int y = std::max(0, cy - ry); y < std::min(h, cy + ry); ++y)
      for (int x = std::max(0, cx - rx); x < std::min(w, cx + rx); ++x) {
        const float u = (x - cx) / float(rx), v = (y - cy) / float(ry);
        if (disc && u * u + v * v > 1) continue;
        for (int c = 0; c < 3; ++c) px[(static_cast<size_t>(y) * w + x) * 3 + c] = colour[c];
      }
  }
  std::vector<uint8_t> out(px.size());
  for (size_t i = 0; i < px.size(); ++i) out[i] = clamp8(px[i] + 12.0f * (rng.unit() - 0.5f));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 && argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: %s DIR COUNT [WIDTH HEIGHT [SEED]]\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  const int count = std::atoi(argv[2]);
  const int w = argc >= 5 ? std::atoi(argv[3]) : 64, h = argc >= 5 ? std::atoi(argv[4]) : 64;
  const uint32_t seed = argc == 6 ? static_cast<uint32_t>(std::strtoul(argv[5], nullptr, 10)) : 1;
  if (count <= 0 || w <= 0 || h <= 0) {
    std::fprintf(stderr, "make_images: COUNT, WIDTH and HEIGHT must be positive\n");
    return 2;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    std::fprintf(stderr, "make_images: cannot create %s: %s\n", dir.c_str(), ec.message().c_str());
    return 1;
  }
  Rng rng{0x9E3779B97F4A7C15ull ^ seed};
  for (int i = 0; i < count; ++i) {
    const std::vector<uint8_t> px = draw(w, h, rng);
    char name[32];
    std::snprintf(name, sizeof name, "img-%03d.png", i);
    const std::filesystem::path final_path = dir / name, tmp = dir / (std::string(name) + ".tmp");
    if (!stbi_write_png(tmp.c_str(), w, h, 3, px.data(), w * 3)) {
      std::fprintf(stderr, "make_images: cannot write %s\n", tmp.c_str());
      return 1;
    }
    std::filesystem::rename(tmp, final_path, ec);
    if (ec) {
      std::fprintf(stderr, "make_images: cannot rename %s: %s\n", tmp.c_str(), ec.message().c_str());
      return 1;
    }
  }
  return 0;
}
