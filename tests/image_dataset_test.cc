// Image datasets: decoding (PNG, JPEG), resizing, centre crop, channel order,
// scale/mean/std, layout and dtype; the manifest keys and their errors; the
// preprocessing in the cache key of steps that use the dataset.
extern "C" {  // libstb is C; this header declares no C++ linkage itself
#include <stb/stb_image_write.h>
}

#include "build_fixture.h"
#include "qforge/dataset.h"
#include "qforge/half.h"
#include "qforge/manifest.h"

namespace {

// A w x h RGB image whose pixel (x, y) is (10x + y, 100 + x, 200 - y).
std::vector<uint8_t> pattern(int w, int h) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &px[(static_cast<size_t>(y) * w + x) * 3];
      p[0] = static_cast<uint8_t>(10 * x + y), p[1] = static_cast<uint8_t>(100 + x),
      p[2] = static_cast<uint8_t>(200 - y);
    }
  return px;
}

std::string write_png(const fs::path& dir, const std::string& name, int w, int h,
                      const std::vector<uint8_t>& px) {
  const std::string path = (dir / name).string();
  REQUIRE(stbi_write_png(path.c_str(), w, h, 3, px.data(), w * 3) != 0);
  return path;
}

std::vector<float> floats(const Array& a) {
  std::vector<float> v(a.data->size() / 4);
  std::memcpy(v.data(), a.data->data(), a.data->size());
  return v;
}

struct Dir {
  fs::path path = fs::temp_directory_path() / ("qforge-images-" + std::to_string(::getpid()));
  Dir() {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~Dir() { fs::remove_all(path); }
};

}  // namespace

TEST_CASE("image samples: decode, crop, channel order, normalisation, layout, dtype", "[dataset][images]") {
  Dir d;
  const std::string png = write_png(d.path, "p.png", 4, 3, pattern(4, 3));
  ImagePreprocess p;  // defaults: rgb, nchw, /255, batch
  Array a = load_image(png, p);
  CHECK(a.type == ElemType::F32);
  CHECK(a.shape == std::vector<int64_t>{1, 3, 3, 4});
  auto v = floats(a);
  // channel 0 (red) at (x=2, y=1) is 21; channel 2 (blue) at (x=0, y=2) is 198.
  CHECK(v[(0 * 3 + 1) * 4 + 2] == Approx(21 / 255.0));
  CHECK(v[(2 * 3 + 2) * 4 + 0] == Approx(198 / 255.0));

  p.channels = "bgr";
  p.layout = "nhwc";
  p.batch = false;
  p.scale = 1.0;
  p.mean = {1, 2, 3};
  p.std = {2, 2, 2};
  a = load_image(png, p);
  CHECK(a.shape == std::vector<int64_t>{3, 4, 3});
  v = floats(a);
  // (x=2, y=1): channel 0 is now blue (199), channel 2 red (21).
  CHECK(v[(1 * 4 + 2) * 3 + 0] == Approx((199 - 1) / 2.0));
  CHECK(v[(1 * 4 + 2) * 3 + 2] == Approx((21 - 3) / 2.0));

  ImagePreprocess crop;
  crop.crop_h = 1, crop.crop_w = 2;
  crop.dtype = "uint8";
  crop.scale = 1;
  a = load_image(png, crop);
  REQUIRE(a.shape == std::vector<int64_t>{1, 3, 1, 2});
  // Crop origin ((4-2)/2, (3-1)/2) = (1, 1): red of (1,1) = 11, (2,1) = 21.
  CHECK(a.data->data()[0] == 11);
  CHECK(a.data->data()[1] == 21);

  ImagePreprocess half;
  half.dtype = "float16";
  half.channels = "gray";
  a = load_image(png, half);
  CHECK(a.type == ElemType::F16);
  CHECK(a.shape == std::vector<int64_t>{1, 1, 3, 4});
}

TEST_CASE("image samples: resizing (nearest, bilinear, shorter side) and JPEG", "[dataset][images]") {
  Dir d;
  const std::string png = write_png(d.path, "p.png", 4, 3, pattern(4, 3));
  ImagePreprocess p;
  p.resize_h = 6, p.resize_w = 8;
  p.interpolation = "nearest";
  p.dtype = "uint8";
  Array a = load_image(png, p);
  REQUIRE(a.shape == std::vector<int64_t>{1, 3, 6, 8});
  // Doubling with nearest repeats each pixel: red of output (x=5, y=3) is red of (2, 1) = 21.
  CHECK(a.data->data()[3 * 8 + 5] == 21);

  // A constant image stays constant through a bilinear or bicubic resize.
  std::vector<uint8_t> flat(10 * 10 * 3, 77);
  const std::string fpng = write_png(d.path, "flat.png", 10, 10, flat);
  for (const char* interp : {"bilinear", "bicubic", "area"}) {
    ImagePreprocess q;
    q.resize_shorter = 4;
    q.interpolation = interp;
    q.scale = 1;
    Array r = load_image(fpng, q);
    REQUIRE(r.shape == std::vector<int64_t>{1, 3, 4, 4});
    for (float x : floats(r)) CHECK(x == Approx(77).margin(1e-3));
  }
  // Shorter side of a 4x3 image to 6: 8x6.
  ImagePreprocess s;
  s.resize_shorter = 6;
  CHECK(load_image(png, s).shape == std::vector<int64_t>{1, 3, 6, 8});

  // JPEG decodes (lossy: values close to the source).
  const std::string jpg = (d.path / "flat.jpg").string();
  REQUIRE(stbi_write_jpg(jpg.c_str(), 10, 10, 3, flat.data(), 95) != 0);
  ImagePreprocess j;
  j.scale = 1;
  for (float x : floats(load_image(jpg, j))) CHECK(x == Approx(77).margin(2));

  // Bad files name themselves.
  std::ofstream(d.path / "bad.png") << "not an image";
  CHECK_THROWS_WITH(load_image((d.path / "bad.png").string(), j),
                    Catch::Contains("bad.png: cannot decode the image") && Catch::Contains("PNG, JPEG"));
  ImagePreprocess big;
  big.crop_h = big.crop_w = 50;
  CHECK_THROWS_WITH(load_image(png, big), Catch::Contains("centre crop 50x50 is larger than the image (3x4"));
}

TEST_CASE("image datasets in a manifest: keys, errors, and the preprocessing in cache keys",
          "[dataset][images][manifest]") {
  Fixture fx([](Registry& r) {
    PassInfo p;
    p.name = "uses-data";
    p.description = "reads a dataset";
    OptionSpec ds;
    ds.name = "dataset";
    ds.type = OptType::Dataset;
    ds.help = "samples";
    ds.required = true;
    p.options = {ds};
    p.factory = [] { return std::make_unique<Scale>(); };
    r.add_pass(p);
  });
  fs::create_directories(fx.dir / "pages");
  write_png(fx.dir / "pages", "a.png", 4, 3, pattern(4, 3));
  write_png(fx.dir / "pages", "b.png", 4, 3, pattern(4, 3));
  auto manifest = [&](const std::string& dataset) {
    fx.write("qforge.toml",
             "[models.m]\npath = \"model.txt\"\n[datasets.pages]\n" + dataset +
                 "\n[[targets]]\nname = \"t\"\nmodel = \"m\"\npipeline = [ { pass = \"uses-data\", dataset = "
                 "\"pages\" } ]\n");
  };
  auto key = [&]() {
    std::unique_ptr<Manifest> keep;
    auto [plan, errors] = fx.plan(keep);
    INFO(errors);
    REQUIRE(errors.empty());
    return plan.nodes.at(1).key;
  };
  manifest(R"(images = ["pages/*.png"]
input = "x"
resize = [48, 320]
mean = [0.5, 0.5, 0.5]
std = 0.5)");
  {
    std::unique_ptr<Manifest> keep;
    auto [plan, errors] = fx.plan(keep);
    REQUIRE(errors.empty());
    const Dataset& ds = plan.datasets.at("pages");
    REQUIRE(ds.images);
    REQUIRE(ds.size() == 2);
    Sample s = ds.load(1);
    REQUIRE(s.arrays.size() == 1);
    CHECK(s.arrays[0].name == "x");
    CHECK(s.arrays[0].shape == std::vector<int64_t>{1, 3, 48, 320});
  }
  const std::string k1 = key();
  manifest(R"(images = ["pages/*.png"]
input = "x"
resize = [48, 320]
mean = [0.5, 0.5, 0.4]
std = 0.5)");
  CHECK(key() != k1);  // preprocessing is part of what a step that reads the data depends on

  manifest(R"(images = ["pages/*.png"]
files = ["pages/*.png"]
interpolation = "bilinaer"
mean = [0.5, 0.5]
resize = [0, 3])");
  const std::string errors = fx.plan_errors();
  CHECK_THAT(errors, Catch::Contains("has both 'files' and 'images'"));
  CHECK_THAT(
      errors,
      Catch::Contains("'interpolation' in [datasets.pages] cannot be 'bilinaer' (did you mean 'bilinear'?)"));
  CHECK_THAT(errors,
             Catch::Contains("'mean' in [datasets.pages] has 2 values; give one, or one per channel (3)"));
  CHECK_THAT(errors, Catch::Contains("'resize' in [datasets.pages] must be [height, width]"));
}
