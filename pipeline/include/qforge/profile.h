// Hardware profiles: data (TOML) saying what a device/runtime accepts and runs
// fast. A profile supplies default pass options and may forbid values.
//
//   name = "qnn-htp"
//   description = "Qualcomm Hexagon NPU through ONNX Runtime's QNN EP"
//   [defaults.quantize-static]
//   activation_type = "uint16"
//   [allow.quantize-static]
//   activation_type = ["uint8", "uint16"]
#pragma once

#include <map>
#include <string>
#include <vector>

#include "qforge/diag.h"
#include "qforge/value.h"

namespace qforge {

struct Profile {
  std::string name;
  std::string description;
  std::string path;                                             // file it was read from
  std::string digest;                                           // of the file's bytes (cache keys)
  Value properties;                                             // [device] and other tables, as written
  std::map<std::string, Options> defaults;                      // pass -> options
  std::map<std::string, std::map<std::string, Value>> allowed;  // pass -> option -> list of values
  std::map<std::string, SourceLoc> pass_locs;  // where [defaults.<pass>] / [allow.<pass>] is written
  // Passes the profile may configure although no loaded plugin provides them
  // (`optional_passes = ["quantize-static"]`): their sections are checked
  // only when the pass is registered.
  std::vector<std::string> optional_passes;
  SourceLoc loc;  // the file's first line

  // The allowed values of a pass option, or null when unrestricted.
  const Value* allowed_values(const std::string& pass, const std::string& option) const;
};

class ProfileSet {
 public:
  // Loads every *.toml in `dir` (later directories override earlier ones by name).
  void load_dir(const std::string& dir, Diagnostics& diags);
  void load_file(const std::string& path, Diagnostics& diags);
  const Profile* find(const std::string& name) const;
  std::vector<std::string> names() const;
  std::vector<const Profile*> all() const;

 private:
  std::map<std::string, Profile> profiles_;
};

// Directories searched for built-in profiles: beside the binary
// (../share/qforge/profiles), then the source tree's manifests/profiles.
std::vector<std::string> builtin_profile_dirs();

}  // namespace qforge
