// The Pass seam: a named step of a build with a typed option schema.
//
// A pass declares its options (validated, with defaults applied, before any
// work starts: `qforge plan` reports every bad value), the artifacts it
// consumes and the one it produces (a Model, a Table or a File), and one
// run() method. It returns what it changed, what it skipped and why,
// warnings, and statistics (fidelity metrics, counts) for the report.
// docs/architecture.md ("Passes") describes the seam; docs/manifest.md lists
// every built-in pass's options.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qforge/executor.h"
#include "qforge/model.h"
#include "qforge/progress.h"
#include "qforge/status.h"
#include "qforge/table.h"
#include "qforge/value.h"

namespace qforge {

enum class OptType {
  Bool,
  Int,
  Float,
  String,
  Enum,     // one of `choices`
  List,     // list of strings
  Table,    // string -> string
  Path,     // a file, relative to the manifest; its contents are part of the cache key
  Dataset,  // the name of a [datasets.*] entry; its files are part of the cache key
  Size,     // "3.5GiB", "4.5bpw", or a number of bytes
};
const char* name_of(OptType t);

// What a value may be, beyond its type; checked at plan time (and against a
// profile's defaults when the profile is loaded).
struct OptionSpec {
  std::string name;
  OptType type = OptType::String;
  std::string help;
  std::vector<std::string> choices;  // Enum (and allowed list items for List when non-empty)
  Value default_value;               // Null: no default (absent unless given)
  bool required = false;
  std::vector<int64_t> int_choices;  // Int: the set it must be in (e.g. {4, 8}); empty: any
  bool has_min = false, has_max = false;
  double min = 0, max = 0;   // Int, Float: inclusive bounds when has_min/has_max
  std::string pattern;       // String, List items: an ECMAScript regex the whole value matches
  std::string pattern_help;  // what the pattern means ("REGEX=TYPE"), for messages
  // List: the items are a set (order and repeats do not change the result),
  // so the cache key sorts them. Lists are ordered unless said otherwise: an
  // ordered list keeps its order in the key (docs/architecture.md, "Keys").
  bool unordered = false;
};

// A Size option's value parsed: bytes or bits per weight.
struct SizeValue {
  enum class Unit { Bytes, BitsPerWeight } unit = Unit::Bytes;
  double value = 0;  // bytes (integral) or bits per weight
};
// Parses "3.5GiB", "500MB", "4.5bpw", "123456" (bytes). False when malformed.
bool parse_size(const std::string& text, SizeValue& out);

// The kinds of artifact a build node consumes and produces.
enum class ArtifactKind { Model, Table, File };
const char* name_of(ArtifactKind k);

// One artifact a pass consumes or produces. `schema` names what a Table holds
// ("ranges/1"); empty accepts any.
struct ArtifactSpec {
  ArtifactKind kind = ArtifactKind::Model;
  std::string schema;
  bool optional = false;  // an input the pass can do without
  std::string help;       // what it is for ("activation ranges from calibrate")
};

// A problem a pass's validate hook finds in its options: which option, what is
// wrong and what to do. Located by the host at the option's file:line:col.
struct OptionProblem {
  std::string option;  // empty: the step as a whole
  std::string message;
};

struct Profile;  // qforge/profile.h
struct Dataset;  // qforge/dataset.h

struct PassContext {
  const Options& options;  // validated; defaults from the schema and the profile applied
  const Profile* profile;  // null when the target has none
  std::string target;      // the first target this step serves
  std::string base_dir;    // the manifest's directory (Path options are already absolute)
  int threads = 1;         // worker threads the pass may use
  Progress& progress;
  // Datasets named by Dataset options, resolved.
  std::map<std::string, const Dataset*> datasets;
  // The model as imported (for evaluation against a reference).
  const Model* reference = nullptr;
  // The Tables this step consumes, in the order of PassInfo::inputs (null for
  // an optional input that no step provides).
  std::vector<std::shared_ptr<const Table>> tables;
  // The build's executor, for passes that run the model (calibration,
  // evaluation); null when none is registered. Prepare with `threads`.
  const Executor* executor = nullptr;
};

// Something a pass left alone, and why ("weight is not a constant").
struct Skipped {
  std::string reason;
  std::string what;  // "node 'fc1' (MatMul)"
};

struct PassResult {
  Status status;
  // Model-producing passes: whether the model changed. A pass that changes
  // nothing is reported as a warning by the engine (docs/architecture.md).
  bool changed = false;
  std::map<std::string, double> metrics;  // reported per target ("cosine", "fallbacks" ...)
  std::vector<std::string> notes;         // lines for the report
  std::vector<std::string> warnings;      // shown on the terminal and in the report; errors with --strict
  // What was left alone: summarised by reason on the terminal and in
  // report.md, listed whole in report.json.
  std::vector<Skipped> skipped;
  // Table-producing passes: the table (required when PassInfo::output is a Table).
  std::shared_ptr<const Table> table;
};

class Pass {
 public:
  virtual ~Pass() = default;
  // Must not throw; use qforge::guard or catch inside. A Model-producing pass
  // edits `model` (a copy of its input); a Table-producing pass reads it and
  // returns PassResult::table.
  virtual PassResult run(Model& model, PassContext& ctx) = 0;
};

struct PassInfo {
  std::string name;
  std::string description;
  int version = 1;  // bump when output changes for the same input (cache keys)
  std::vector<OptionSpec> options;
  bool needs_graph = false;
  bool needs_profile = false;
  // Runs the model through PassContext::executor (calibration, folding,
  // evaluation): the executor's name is part of the step's cache key, and a
  // build without an executor is refused at plan time.
  bool needs_executor = false;
  // Reads PassContext::reference (the model as imported): the engine imports
  // the model for this step even when a cached intermediate would spare it.
  bool needs_reference = false;
  // What it consumes besides the model every pass reads (Tables, by schema),
  // and what it produces. The plan connects a Table input to the nearest step
  // before it in the same pipeline producing that schema, or to the step a
  // manifest names with `inputs = ["target/step"]`.
  std::vector<ArtifactSpec> inputs;
  ArtifactSpec output;  // default: a Model
  // An intermediate Model from this pass costs more to recompute than to
  // store: the engine caches it when another step consumes it (Tables are
  // always cached; emitted files are the artifacts themselves).
  bool expensive = false;
  // Checks option combinations the schema cannot express (at plan time,
  // before any model is read). Must not throw.
  std::function<std::vector<OptionProblem>(const Options&)> validate;
  std::function<std::unique_ptr<Pass>()> factory;
};

}  // namespace qforge
