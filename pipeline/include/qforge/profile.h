// Hardware profiles: data (TOML) saying what a device and its runtime accept,
// what runs fast there, how much memory a model may take and how much fidelity
// the application may lose. docs/manifest.md ("Hardware profiles") is the
// reference; manifests/profiles/ holds the built-in library.
//
//   name = "qnn-htp"
//   description = "Qualcomm Hexagon NPU through ONNX Runtime's QNN EP"
//   backend = "onnxruntime-qnn"
//   extends = "..."                  # optional: start from another profile
//   docs = ["https://..."]           # the public documentation it encodes
//   [onnx]                           # what the runtime executes quantized
//   activation_types = ["uint8", "uint16"]
//   pairs = ["uint16:uint8", "uint8:uint8", ...]
//   [memory]
//   budget = "3.5GiB"                # or ram/usable/reserve
//   [defaults.quantize-static]       # pass options a target gets unless it sets them
//   activation_type = "uint16"
//   [allow.quantize-static]          # the only values a pass option may take
//   activation_type = ["uint8", "uint16"]
//
// The [onnx] and [gguf] constraints become [allow.<pass>] entries of the
// quantization passes (unless the profile writes those itself) and are
// checked on every artifact a target with the profile emits
// (check_artifact_against_profile in qforge/build.h).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "qforge/diag.h"
#include "qforge/value.h"

namespace qforge {

struct Manifest;

// [memory]: a fixed budget, or a share of a device's RAM minus a reserve
// (the KV cache of an LLM's context, the application itself).
struct MemorySpec {
  uint64_t budget = 0;   // bytes; 0 = not set
  uint64_t ram = 0;      // bytes; 0 = not set
  double usable = 1.0;   // fraction of `ram` a model may use
  uint64_t reserve = 0;  // bytes kept back from ram * usable
  SourceLoc loc;
  // The budget in bytes (`budget`, else ram * usable - reserve); 0 when none.
  uint64_t bytes() const;
};

// [fidelity]: the default floor a precision search must keep.
struct FidelitySpec {
  std::optional<double> min_cosine;
  std::optional<double> min_sqnr_db;
  SourceLoc loc;
};

// [onnx]: what an ONNX runtime executes with integer kernels.
struct OnnxSpec {
  bool present = false;
  int min_opset = 0;                          // the Q/DQ model's opset must be at least this
  std::vector<std::string> activation_types;  // empty: any
  std::vector<std::string> weight_types;      // empty: any
  std::vector<std::pair<std::string, std::string>>
      pairs;                           // (activation, weight) allowed together; empty: any
  bool symmetric_activations = false;  // activation zero point at the type's middle
  bool symmetric_weights = false;
  bool zero_point_zero = false;               // every zero point 0 (signed types, symmetric)
  std::optional<bool> per_channel;            // nullopt: either
  std::vector<std::string> per_channel_ops;   // ops whose weights may have per-channel scales
  std::vector<std::string> formats;           // "qdq", "qoperator"
  std::vector<std::string> quantized_ops;     // ops the runtime runs in integers; empty: any
  std::vector<std::string> shared_scale_ops;  // ops whose inputs and output share a scale
  std::map<std::string, std::pair<double, double>> fixed_outputs;  // op -> output range
  std::vector<int64_t> block_sizes;                                // weight-only block sizes
  SourceLoc loc;
};

// [gguf]: what a llama.cpp backend has fast kernels for.
struct GgufSpec {
  bool present = false;
  std::vector<std::string> fast_types;  // tensor types ("Q4_K", "Q8_0", ...)
  int64_t row_multiple = 0;  // a quantized tensor's rows must be a multiple of this; 0 = the type's block
  SourceLoc loc;
};

// Values several options of one pass may take together: each tuple lists the
// values of `options`, in order ("activation_type", "weight_type").
struct Combinations {
  std::vector<std::string> options;
  std::vector<std::vector<std::string>> tuples;
  SourceLoc loc;
};

struct Profile {
  std::string name;
  std::string description;
  std::string backend;                      // "onnxruntime-cpu", "llama.cpp-cuda", ...
  std::string format;                       // "onnx", "gguf" or "" (either)
  std::string extends;                      // the profile this one starts from ("" = none)
  std::vector<std::string> aliases;         // older names that still find it (deprecated)
  std::vector<std::string> docs;            // public documentation the profile encodes
  std::string path;                         // file it was read from (the manifest for [profiles.<id>])
  std::string digest;                       // of its text and its parents' (cache keys)
  Value properties;                         // [device] and other tables, as written
  std::map<std::string, Options> defaults;  // pass -> options
  std::map<std::string, std::map<std::string, Value>> allowed;    // pass -> option -> list of values
  std::map<std::string, std::vector<Combinations>> combinations;  // pass -> allowed value tuples
  // (pass, option) entries of `allowed` that come from [onnx]/[gguf], not from
  // [allow.<pass>]: where such a list excludes the pass's own default, the
  // step takes the first allowed value (a list option keeps the allowed items).
  std::set<std::pair<std::string, std::string>> derived;
  std::map<std::string, SourceLoc> pass_locs;  // where [defaults.<pass>] / [allow.<pass>] is written
  // Passes the profile may configure although no loaded plugin provides them
  // (`optional_passes = ["quantize-static"]`): their sections are checked
  // only when the pass is registered.
  std::vector<std::string> optional_passes;
  MemorySpec memory;
  FidelitySpec fidelity;
  OnnxSpec onnx;
  GgufSpec gguf;
  SourceLoc loc;  // the file's first line, or the [profiles.<id>] table

  // The allowed values of a pass option, or null when unrestricted.
  const Value* allowed_values(const std::string& pass, const std::string& option) const;
};

class ProfileSet {
 public:
  // Loads every *.toml in `dir` (later loads override earlier ones by name).
  void load_dir(const std::string& dir, Diagnostics& diags);
  void load_file(const std::string& path, Diagnostics& diags);
  // A profile written in a manifest as [profiles.<name>] (`table` is that table).
  void load_value(const std::string& name, const Value& table, const std::string& manifest_path,
                  Diagnostics& diags);
  // What a manifest adds: its [profiles] paths, then its [profiles.<id>] tables.
  void load_manifest(const Manifest& m, Diagnostics& diags);
  // A profile by name or by alias; `alias_of` (when given) is set to true when
  // `name` is a deprecated alias.
  const Profile* find(const std::string& name, bool* via_alias = nullptr) const;
  std::vector<std::string> names() const;
  std::vector<const Profile*> all() const;

 private:
  struct Raw {
    std::string name, path, text_digest;
    Value top;
  };
  static std::optional<Raw> read_file(const std::string& path, Diagnostics& diags);
  void add(std::vector<Raw> batch, Diagnostics& diags);
  bool resolve(const std::string& name, std::map<std::string, Raw>& pending, std::vector<std::string>& stack,
               Diagnostics& diags);
  std::map<std::string, Raw> raw_;  // as written, for profiles that extend them
  std::map<std::string, Profile> profiles_;
};

struct Model;

// What in an ONNX artifact breaks the profile's [onnx] constraints, one line
// per problem naming the node (empty: conforms, or nothing to check). The
// build runs it on every artifact of a target with a profile
// (pipeline/src/profile_check.cc).
std::vector<std::string> check_artifact(const Model& m, const Profile& p);

// Directories searched for built-in profiles: beside the binary
// (../share/qforge/profiles), then the source tree's manifests/profiles.
std::vector<std::string> builtin_profile_dirs();

}  // namespace qforge
