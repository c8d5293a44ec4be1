// The ONNX format plugin: ModelProto <-> qforge::Model (graph.h).
//
// Import reads a .onnx file (up to protobuf's 2 GiB limit) with its external
// data memory-mapped, not copied: tensors whose data_location is EXTERNAL are
// views into the files they name, which must lie inside the model's directory.
// Emit streams initializers one at a time (peak memory grows with the largest
// tensor) and puts large tensors into `<model>.data` beside the model when the
// model would exceed 2 GiB or when `external_data_threshold` is given.
//
// This header includes no protobuf/ONNX headers; the plugin's .cc files do.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "qforge/format.h"
#include "qforge/model.h"

namespace qforge {
class Registry;
}

namespace qforge::onnxfmt {

// Throws qforge::Error naming the file and the tensor/node/field at fault.
Model import_onnx(const std::string& path);

struct EmitOptions {
  // Tensors of at least this many bytes go to the sidecar `<model>.data`.
  // Unset: only when the model would exceed 2 GiB (then tensors >= 1 KiB go).
  std::optional<uint64_t> external_data_threshold;
};
// Parses `external_data_threshold` (an integer byte count) from emit options.
EmitOptions emit_options_from(const Options& options);
void emit_onnx(const Model& model, const std::string& path, const EmitOptions& options);

// Runs ONNX shape inference (for the opsets ONNX 1.12 knows) and appends the
// value infos it finds to the graph's value_info (existing entries are kept;
// graph outputs without a type get one). Returns how many it added. Nodes it
// cannot infer are skipped, not errors. Dimensions written as negative
// numbers (Paddle2ONNX's -1 batch) count as unknown, and where ONNX gives up
// on a Reshape, Expand or ConstantOfShape whose shape input has a known
// length, the output's rank is filled in and inference goes on from there.
// Copies the graph if it is shared.
size_t infer_shapes(Model& model);

// The newest ai.onnx opset the ONNX library qforge is built with knows.
int64_t max_known_opset();
// The model converted to ai.onnx opset `target` by ONNX's version converter
// (onnx_convert.cc), after shape inference as infer_shapes runs it (the
// converter's adapters read shapes). Dimensions written as negative numbers
// come back unknown. Throws qforge::Error naming the nodes of the op the
// converter has no adapter for, with both versions, and naming a Softmax /
// LogSoftmax / Hardmax it cannot convert to opset 13 correctly.
Model convert_opset(const Model& model, int64_t target);

// Score for Format::probe (see format.h).
int probe_onnx(const std::string& path, const uint8_t* head, size_t n);

std::shared_ptr<const Format> make_onnx_format();
void register_onnx(Registry& registry);

// The byte size of `n` elements of `t` as ONNX stores them (int4/uint4 round
// up to whole bytes; strings have no fixed size: nullopt, as on overflow).
std::optional<uint64_t> onnx_byte_size(ElemType t, uint64_t n);

// String tensors: each element is a little-endian u64 byte length followed
// by the bytes. These encode/decode that layout.
std::vector<uint8_t> encode_strings(const std::vector<std::string>& items);
std::vector<std::string> decode_strings(const Blob& blob, uint64_t count, const std::string& what);

}  // namespace qforge::onnxfmt
