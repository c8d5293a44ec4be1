// Calibration and evaluation samples: one sample feeds one or more model inputs.
//
// Readers:
//   .npy  NumPy format 1.0/2.0/3.0, C order, little-endian (or byte-order-free)
//         numeric and bool dtypes. Big-endian, Fortran order, object, string and
//         structured dtypes are refused with a message saying how to re-save.
//   .npz  A ZIP of .npy members (np.savez: stored, np.savez_compressed: deflated),
//         ZIP64 aware, CRC-32 checked. Member `x.npy` gives Array `x`.
//   .pb   An ONNX TensorProto (ONNX's test data `input_0.pb`); raw_data or the
//         typed fields. External data and strings are refused.
// Every reader checks every offset and size against the bytes it has; a bad file
// is a qforge::Error naming the file (and member), the byte offset or field,
// what was expected and what was found.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "qforge/executor.h"
#include "qforge/model.h"

namespace qforge {

// One array of a sample (a .npy file, an .npz member, a TensorProto .pb).
struct Array {
  std::string name;  // input name it feeds; empty: the input at `index`
  int index = 0;     // when `name` is empty: position among the model's inputs
                     // (k of input_k.pb in a test-data directory; 0 otherwise)
  ElemType type = ElemType::F32;
  std::vector<int64_t> shape;
  BlobPtr data;        // C order, little-endian, aligned to the element size
  std::string source;  // where it was read from, for errors ("a.npz:x.npy")
};

struct Sample {
  std::string source;  // file or directory it came from (for errors)
  std::vector<Array> arrays;
};

// Readers. Each throws qforge::Error naming the file, the byte offset or
// field, what was expected and what was found.
Array read_npy(const std::string& path);
std::vector<Array> read_npz(const std::string& path);
Array read_tensor_pb(const std::string& path);

// The same readers on bytes already in memory; `source` names them in errors.
// The arrays may point into `bytes` (which they keep alive).
Array read_npy_bytes(BlobPtr bytes, const std::string& source);
std::vector<Array> read_npz_bytes(BlobPtr bytes, const std::string& source);
Array read_tensor_pb_bytes(BlobPtr bytes, const std::string& source);

// How images become a model input (docs/manifest.md, "Image datasets").
// Decoding (PNG, JPEG, BMP, TGA, GIF's first frame, PNM) and resizing use
// stb (Debian's libstb): resize filters are stb's, antialiased when shrinking.
struct ImagePreprocess {
  int64_t resize_h = 0, resize_w = 0;      // resize to exactly this (0: no resize)
  int64_t resize_shorter = 0;              // or: scale so the shorter side is this
  std::string interpolation = "bilinear";  // nearest | bilinear | bicubic | area
  int64_t crop_h = 0, crop_w = 0;          // centre crop after resizing (0: none)
  std::string channels = "rgb";            // rgb | bgr | gray
  std::string layout = "nchw";             // nchw | nhwc (chw / hwc without `batch`)
  double scale = 1.0 / 255.0;              // pixel value (0-255) times scale ...
  std::vector<double> mean;                // ... minus mean (per channel, or one value) ...
  std::vector<double> std;                 // ... divided by std
  std::string dtype = "float32";           // float32 | float16 | uint8 (uint8: no scale/mean/std)
  bool batch = true;                       // a leading batch dimension of 1
  // A canonical text of every setting (part of cache keys).
  std::string canonical() const;
};

// Decodes an image file and turns it into an Array as `p` says. Throws
// qforge::Error naming the file ("pages/3.png: cannot decode: bad zlib header").
Array load_image(const std::string& path, const ImagePreprocess& p);

// A [datasets.*] entry, or a --data DIR, resolved to files (sorted).
struct Dataset {
  std::string name;
  std::vector<std::string> files;  // .npy/.npz/.pb files, test-data directories, or images
  std::string input;               // model input it feeds ("" = first)
  // Set for an image dataset: every file is an image, preprocessed so.
  std::shared_ptr<const ImagePreprocess> images;
  // Loads sample `i` (files are read one at a time: memory does not grow with
  // the number of samples). A .npy/.pb file gives one array named `input`
  // (index 0); an .npz gives its members by name; a test-data directory gives
  // input_0.pb, input_1.pb, ... named after the TensorProto names (or unnamed,
  // with index k, when the TensorProto has no name).
  Sample load(size_t i) const;
  size_t size() const { return files.size(); }
};

// Files of a --data DIR (docs/manifest.md, "`[datasets.<name>]`"): .npy, .npz and .pb files
// and test-data subdirectories, sorted by name. Hidden entries (".x") are
// skipped; an empty directory or any other entry is an error. A directory that
// is itself in the test-data layout (only input_<k>.pb and output_<k>.pb files,
// at least one of each) is one sample.
Dataset dataset_from_dir(const std::string& dir);

// Checks one array against a model input. `expected_shape` dims < 0 match any
// size (symbolic dims). Throws qforge::Error like
//   "calib/3.npy: input 'x' expects f32 [1, 3, 224, 224], found f64 [3, 224, 224]".
void check_sample(const Array& array, const std::string& input_name, ElemType expected,
                  const std::vector<int64_t>& expected_shape);

// A sample's arrays as a prepared model's inputs, by name: an array named
// after an input feeds it; an unnamed one (a test-data directory's input_k.pb)
// feeds input k; a lone .npy/.pb array feeds the first input when the dataset
// names none (`dataset_input` empty). Throws qforge::Error naming the file
// for an array that matches no input.
NamedValues bind_sample(const Sample& sample, const std::string& dataset_input,
                        const std::vector<std::pair<std::string, std::vector<int64_t>>>& model_inputs);

}  // namespace qforge
