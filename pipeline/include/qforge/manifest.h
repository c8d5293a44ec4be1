// Manifest v1: [build], [plugins], [profiles], [models.*], [datasets.*],
// [[targets]] with matrix expansion. Every value keeps its file:line:col.
// docs/manifest.md is the reference for every key.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qforge/dataset.h"
#include "qforge/diag.h"
#include "qforge/value.h"

namespace qforge {

struct ModelDecl {
  std::string name;
  std::string path;    // absolute
  std::string format;  // "" = probe
  SourceLoc loc;
};

struct DatasetDecl {
  std::string name;
  std::vector<std::string> patterns;  // as written
  std::vector<std::string> files;     // resolved, sorted, absolute
  std::string input;
  std::shared_ptr<const ImagePreprocess> images;  // set when declared with `images = [...]`
  SourceLoc loc;
};

// A reference from a step to another step's result (`inputs = ["t/calibrate"]`).
struct StepRef {
  std::string target;  // "" = the same target
  std::string step;    // a step's `id`, or its pass name
  SourceLoc loc;
};

struct StepDecl {
  std::string pass;
  std::string id;                                // `id = "..."`; "" = none (the pass name refers to it)
  std::vector<StepRef> inputs;                   // explicit table inputs, in the order of the pass's inputs
  Options options;                               // as written, placeholders substituted
  std::map<std::string, SourceLoc> option_locs;  // where each option's key is written
  SourceLoc loc;                                 // of the pass name
};

struct TargetDecl {
  std::string name;
  std::string model;
  std::string profile;  // "" = none
  std::string emit;     // "" = the source model's format
  std::string output;   // "" = <output>/<name>.<ext>; else relative to the manifest
  std::vector<StepDecl> pipeline;
  std::vector<std::pair<std::string, Value>> matrix;  // the values that made it
  SourceLoc loc;
  SourceLoc model_loc, profile_loc, emit_loc;
};

struct Manifest {
  std::string path;        // the manifest file
  std::string dir;         // its directory (absolute)
  std::string output_dir;  // absolute
  std::string cache_dir;   // absolute
  int jobs = 0;            // 0 = number of cores
  int threads = 0;         // the thread budget of a build; 0 = number of cores
  bool strict = false;     // warnings are errors
  std::string executor;    // [build] executor: "" = "cpu"
  SourceLoc executor_loc;
  std::string remote_cache;                // [build] remote_cache: a URL, "" = none (docs/scale.md)
  std::string remote_cache_token_env;      // [build] remote_cache_token_env: the variable holding its token
  std::vector<std::string> plugin_paths;   // absolute
  std::vector<std::string> profile_paths;  // extra profile directories (absolute)
  // Profiles written in the manifest as [profiles.<id>] tables, in file order
  // (ProfileSet::load_value).
  std::vector<std::pair<std::string, Value>> profiles;
  std::map<std::string, ModelDecl> models;
  std::map<std::string, DatasetDecl> datasets;
  std::vector<TargetDecl> targets;  // expanded, in manifest order
};

// Parses and checks the structure (keys, types, references between models,
// datasets and targets, matrix placeholders). Pass names and options are
// checked later against the registry (see build.h: validate). Every problem
// goes to `diags`.
Manifest load_manifest(const std::string& path, Diagnostics& diags);
// The same from text (for tests and `qforge quantize`); `path` names it in messages.
Manifest parse_manifest(const std::string& text, const std::string& path, Diagnostics& diags);

}  // namespace qforge
