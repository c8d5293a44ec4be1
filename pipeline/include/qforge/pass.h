// The Pass seam: a named transformation of a Model with a typed option schema.
//
// A pass declares its options (validated, with defaults applied, before any
// work starts), what it needs, and one run() method. It returns what it
// changed and statistics (fidelity metrics, counts) for the report.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qforge/model.h"
#include "qforge/progress.h"
#include "qforge/status.h"
#include "qforge/value.h"

namespace qforge {

enum class OptType {
  Bool,
  Int,
  Float,
  String,
  Enum,      // one of `choices`
  List,      // list of strings
  Table,     // string -> string
  Path,      // a file, relative to the manifest; its contents are part of the cache key
  Dataset,   // the name of a [datasets.*] entry; its files are part of the cache key
  Size,      // "3.5GiB", "4.5bpw"
};
const char* name_of(OptType t);

struct OptionSpec {
  std::string name;
  OptType type = OptType::String;
  std::string help;
  std::vector<std::string> choices;  // Enum (and allowed list items for List when non-empty)
  Value default_value;               // Null: no default (absent unless given)
  bool required = false;
};

struct Profile;  // qforge/profile.h
struct Dataset;  // qforge/dataset.h

struct PassContext {
  const Options& options;     // validated; defaults from the schema and the profile applied
  const Profile* profile;     // null when the target has none
  std::string target;         // the first target this step serves
  std::string base_dir;       // the manifest's directory (Path options are already absolute)
  int threads = 1;            // worker threads the pass may use
  Progress& progress;
  // Datasets named by Dataset options, resolved.
  std::map<std::string, const Dataset*> datasets;
  // The model as imported (for evaluation against a reference).
  const Model* reference = nullptr;
};

struct PassResult {
  Status status;
  bool changed = false;
  std::map<std::string, double> metrics;  // reported per target ("cosine", "fallbacks" ...)
  std::vector<std::string> notes;         // lines for the report
};

class Pass {
 public:
  virtual ~Pass() = default;
  // Must not throw; use qforge::guard or catch inside.
  virtual PassResult run(Model& model, PassContext& ctx) = 0;
};

struct PassInfo {
  std::string name;
  std::string description;
  int version = 1;  // bump when output changes for the same input (cache keys)
  std::vector<OptionSpec> options;
  bool needs_graph = false;
  bool needs_profile = false;
  std::function<std::unique_ptr<Pass>()> factory;
};

}  // namespace qforge
