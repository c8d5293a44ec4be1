// Quantization arithmetic and ONNX graph helpers shared by the ONNX
// weight-quantization passes (quantize-weights, quantize-dynamic).
//
// Two families of conventions are implemented, each matching what ONNX
// Runtime's Python quantization tool produces:
//
//  * "quant_utils" (onnxruntime/python/tools/quantization/quant_utils.py,
//    used by quantize_dynamic / quantize_static weight handling):
//      rmin = min(min(w), 0), rmax = max(max(w), 0)
//      symmetric: absmax = max(|rmin|, |rmax|), range [-absmax, absmax]
//      scale = float32((rmax - rmin) / (qmax - qmin))  (computed in double)
//      zero point = symmetric ? round((qmin + qmax) / 2) : round(qmin - rmin / scale)
//      q = clip(round(w / scale) + zp, qmin, qmax)   (float32 divide, numpy
//      round = round half to even); a range below FLT_MIN gives scale 1, zp 0.
//      int8 symmetric uses [-127, 127]; reduce_range uses [-64, 64] / [0, 127].
//
//  * "MLAS blockwise" (the C++ kernels behind MatMulNBitsQuantizer, i.e.
//    onnxruntime/core/mlas/lib/q4_dq.cpp):
//      symmetric: m = the block's value of largest magnitude (sign kept),
//        scale = -m / 2^(bits-1), so m maps to the most negative code;
//      asymmetric: scale = (max(vmax,0) - min(vmin,0)) / (2^bits - 1),
//        zp = roundf(qmin - min / scale) clamped to the code range;
//      codes: QDQ quantizer clamp(roundf(w * r) + zp), MatMulNBits quantizer
//      clamp(roundf(w * r + zp)) (unsigned, zp = 2^(bits-1) when symmetric),
//      r = 1 / scale (0 for a zero scale), C's roundf (ties away from zero).
//      Verified bit-identical to ORT 1.31's quantize_matmul_{4,8}bits and
//      quantize_qdq_matmul_4bits (tests/quantize_weights_test.cc).
//
// Matrices are a weight W of logical shape [K, N] (MatMul's B); `transposed`
// says the bytes are stored as [N, K] (Gemm with transB = 1).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "qforge/graph.h"
#include "qforge/model.h"
#include "qforge/pass.h"
#include "qforge/types.h"
#include "qforge/value.h"

namespace qforge::quant {

// ---------------------------------------------------------------- rounding
enum class Rounding { HalfEven, HalfAwayFromZero };
// Rounds to an integer-valued float (numpy.round or C roundf).
float round_to_int(float x, Rounding mode);

// ---------------------------------------------------------------- quant_utils
struct QRange {
  int32_t qmin = 0;
  int32_t qmax = 0;
};
// The integer range ORT uses for `type` (I8, U8, I4, U4, I16, U16).
QRange qrange(ElemType type, bool symmetric, bool reduce_range);

struct ScaleZp {
  float scale = 1.0f;
  int32_t zero_point = 0;
};
// quant_utils.compute_scale_zp for one range.
ScaleZp compute_scale_zp(float rmin, float rmax, QRange r, bool symmetric);
// quant_utils.quantize_nparray for one value.
int32_t quantize_value(float v, const ScaleZp& p, QRange r);

// ---------------------------------------------------------------- MLAS blockwise
// Scale of a symmetric block from its min and max (range2scale).
float mlas_symmetric_scale(float vmin, float vmax, int bits);
// Scale and zero point of an asymmetric block (range2scalezp, unsigned codes).
ScaleZp mlas_asymmetric_scale_zp(float vmin, float vmax, int bits);

// ---------------------------------------------------------------- matrices
enum class Convention { QuantUtils, MlasBlockwise };

struct QuantSpec {
  ElemType type = ElemType::I8;  // I8, U8, I4, U4: the code type of `QuantizedMatrix::q`
  bool symmetric = true;
  bool reduce_range = false;  // QuantUtils only
  int64_t block_size = 0;     // along K; 0 = one block of all K (per output channel)
  Convention convention = Convention::QuantUtils;
  // MlasBlockwise as ORT's MatMulNBits quantizer does it (unsigned codes,
  // zero point 2^(bits-1) implied when symmetric, codes rounded after adding
  // the zero point: roundf(w / scale + zp)). Otherwise MlasBlockwise follows
  // the QDQ quantizer (signed codes when symmetric, roundf(w / scale) + zp).
  bool mlas_nbits = false;
  // F32 or F16: the type scales are stored in. With F16 each scale is
  // rounded to half precision before the weights are quantized with it (ORT
  // reads the stored scale back), so codes match the stored scale.
  ElemType scale_type = ElemType::F32;
};

// A quantized [K, N] matrix: w[k][n] ~= scale[b][n] * (q[k][n] - zp[b][n]),
// b = k / block_size. `q` is row-major [K, N]; `scales`/`zero_points` are
// row-major [n_blocks, N]. zero_points is empty when the scheme has none
// (symmetric signed codes).
struct QuantizedMatrix {
  int64_t K = 0, N = 0, block_size = 0, n_blocks = 0;
  std::vector<int32_t> q;
  std::vector<float> scales;
  std::vector<int32_t> zero_points;
};

// Quantizes W ([K, N] logically; [N, K] in memory when `transposed`).
QuantizedMatrix quantize_matrix(const float* w, int64_t K, int64_t N, bool transposed, const QuantSpec& spec);

// ---------------------------------------------------------------- packing
// ONNX int4/uint4 packing: element 2i in the low nibble of byte i, 2i+1 in
// the high nibble; an odd count leaves the last high nibble 0.
std::vector<uint8_t> pack_nibbles(const std::vector<int32_t>& values);
// The bytes of `values` as `type` (I8, U8 one per byte; I4, U4 packed).
std::vector<uint8_t> encode_codes(const std::vector<int32_t>& values, ElemType type);

// MatMulNBits (com.microsoft) inputs from a matrix quantized with unsigned
// codes: B as uint8 [N, n_blocks, block_size * bits / 8] (within a block,
// element k at byte k*bits/8, low bits first; codes past K are 0, as ORT's
// quantizer leaves them), scales [N * n_blocks], zero points packed per column
// [N * ceil(n_blocks * bits / 8)] (empty when the matrix has none; an unused
// last nibble holds 8, as ORT writes it).
struct NBitsTensors {
  std::vector<uint8_t> b;
  std::vector<float> scales;
  std::vector<uint8_t> zero_points;
};
NBitsTensors pack_matmul_nbits(const QuantizedMatrix& m, int bits);

// ---------------------------------------------------------------- tensors
// The float values of an f32 tensor; throws Error naming the tensor when its
// data is missing or has the wrong size.
std::vector<float> read_f32(const Tensor& t);
// The values of an f32 or f16 tensor as floats.
std::vector<float> read_floats(const Tensor& t);
// IEEE half precision, round to nearest even (inf/NaN kept, overflow -> inf).
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);
// A tensor of `type` F32 or F16 holding `v`.
Tensor make_float_tensor(std::string name, std::vector<int64_t> shape, ElemType type,
                         const std::vector<float>& v);
Tensor make_tensor(std::string name, std::vector<int64_t> shape, ElemType type, std::vector<uint8_t> bytes);
Tensor make_f32_tensor(std::string name, std::vector<int64_t> shape, const std::vector<float>& v);
// Throws Error naming the tensor when it is not f32/f16 or its loaded data
// (if any: lazy tensors are checked when produced) has the wrong size.
void check_float_data(const Tensor& t);

// Deferred computation of several tensors' bytes at once (a weight's codes,
// scales and zero points). Returns one producer per part; the computation
// runs when a part is first asked for, under a lock, and its results are kept
// until each part was taken once, then dropped (asking again recomputes, with
// the same result). Keeps quantized models out of memory until emit streams
// them.
std::vector<std::function<BlobPtr()>> lazy_parts(size_t n,
                                                 std::function<std::vector<std::vector<uint8_t>>()> compute);
// A tensor whose bytes come from `producer` (which may throw: its errors
// become the tensor's error, naming `pass` and the tensor).
Tensor make_lazy_tensor(std::string name, std::vector<int64_t> shape, ElemType type,
                        std::function<BlobPtr()> producer, const std::string& pass);
// The bytes of `v` as f32 or f16.
std::vector<uint8_t> float_bytes(const std::vector<float>& v, ElemType type);

// Bytes as ONNX stores them (int4 rounds up).
uint64_t stored_bytes(const Tensor& t);

// ---------------------------------------------------------------- options
// Typed reads of validated pass options; throw Error naming the pass and
// option when a value has the wrong kind.
bool opt_bool(const Options& o, const std::string& pass, const std::string& name, bool dflt);
int64_t opt_int(const Options& o, const std::string& pass, const std::string& name, int64_t dflt);
std::string opt_string(const Options& o, const std::string& pass, const std::string& name,
                       const std::string& dflt);
std::vector<std::string> opt_list(const Options& o, const std::string& pass, const std::string& name,
                                  std::vector<std::string> dflt);
bool opt_has(const Options& o, const std::string& name);
// "manifest.toml:12:5: " when the option's value came from a file, else "".
std::string opt_where(const Options& o, const std::string& name);

// An entry of a pass's option schema (PassInfo::options).
OptionSpec option_spec(std::string name, OptType type, std::string help, Value dflt = {},
                       std::vector<std::string> choices = {});
// A Value of kind List holding `items` as strings.
Value string_list(const std::vector<std::string>& items);

// ---------------------------------------------------------------- graphs
// "node 'fc1' (MatMul)" / "node #3 (MatMul)".
std::string node_label(const Node& n, size_t index);
// "[32, 16]".
std::string shape_str(const std::vector<int64_t>& s);

// ---------------------------------------------------------------- rewriting passes
// The frame every ONNX rewriting pass shares: run() calls run_impl with a
// fresh result, turns an exception into a failed status, and reports no
// change when it failed.
class RewritePass : public Pass {
 public:
  PassResult run(Model& model, PassContext& ctx) final;

 protected:
  virtual void run_impl(Model& model, PassContext& ctx, PassResult& res) = 0;
};

// A copy of `model` with its own graph, for a pass to edit and hand back
// only when everything succeeded. Throws Error naming the model when it has
// no graph: "model 'a.gguf' (gguf) has no graph; <what_pass_needs>".
Model working_copy(const Model& model, const std::string& what_pass_needs);

// Why the weight input `w` of a node is not quantized as a constant: it is
// not an initializer, or it is also a graph input. "" when it is a constant.
std::string constant_weight_problem(const Model& m, const std::string& w);

// The note for nodes whose subgraph bodies a pass leaves alone, added to
// `notes` when there are any.
void note_subgraph_bodies(const Graph& g, std::vector<std::string>& notes);

// raise_default_opset, adding "raised the default ONNX opset from 13 to 21
// for <why>" to `notes` when it raised it.
void raise_default_opset_noted(Graph& g, int64_t want, const std::string& pass, const std::string& why,
                               std::vector<std::string>& notes);

// What a weight-quantizing pass did, for commit_rewrite.
struct RewriteStats {
  std::vector<std::string> skipped;  // one note per node left alone
  size_t quantized_weights = 0;
  size_t quantized_nodes = 0;
  uint64_t bytes_before = 0;  // stored bytes of the quantized weights
  uint64_t bytes_after = 0;   // stored bytes of what replaces them
};

// Ends a rewrite on `work` (its new initializers already added): drops the
// `replaced` weights nothing reads any more, validates the graph, appends
// the skip notes to res.notes, sets the metrics quantized_weights,
// quantized_nodes, skipped_nodes, weight_bytes_before and
// weight_bytes_after, and moves `work` into `model` when a node was
// rewritten (res.changed).
void commit_rewrite(Model& model, Model& work, const std::vector<std::string>& replaced,
                    const RewriteStats& stats, PassResult& res);

// Raises the default-domain opset to at least `want` (the graph's own
// ModelInfo). Before changing anything, checks every node, in subgraphs
// too, for ops whose form changed between the current and the new version
// (attributes that became inputs, removed ops) and throws Error naming the
// node, what changed and at which opset. Returns the previous version
// (unchanged when it was already high enough).
int64_t raise_default_opset(Graph& g, int64_t want, const std::string& pass, const std::string& why);
// Adds an opset import for `domain` at `version` when missing.
void ensure_opset(Graph& g, const std::string& domain, int64_t version);
// Raises ir_version to at least `v`.
void ensure_ir_version(Graph& g, int64_t v);

// Whether a top-level initializer named `name` exists and is not shadowed
// by a graph input (such weights are overridable at run time).
bool is_constant_initializer(const Model& m, const std::string& name);

// Removes top-level initializers no node (or subgraph) reads any more and
// that are not graph outputs, among `candidates`; drops their value_info.
void drop_unused_initializers(Model& m, const std::vector<std::string>& candidates);

// Counts nodes with `op_type` (and `domain`) in the top-level graph.
size_t count_ops(const Graph& g, const std::string& op_type, const std::string& domain = "");
// Number of nodes carrying subgraph attributes (their bodies are not rewritten).
size_t count_subgraph_nodes(const Graph& g);

}  // namespace qforge::quant
