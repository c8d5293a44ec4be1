// The Format seam: probe, import, emit. Built-ins and plugins implement this.
#pragma once

#include <cstdint>
#include <string>

#include "qforge/model.h"
#include "qforge/status.h"
#include "qforge/value.h"

namespace qforge {

class Format {
 public:
  virtual ~Format() = default;
  virtual std::string name() const = 0;       // "onnx", "gguf"
  virtual std::string version() const = 0;    // changes when output bytes change (cache keys)
  virtual std::string extension() const = 0;  // ".onnx"
  virtual std::string description() const = 0;
  // 0: not this format; 100: certain. `head` holds the first bytes of the file.
  virtual int probe(const std::string& path, const uint8_t* head, size_t n) const = 0;
  // Fills `out`. Errors name the file, the byte offset or field, and the fix.
  virtual Status import_model(const std::string& path, Model& out) const = 0;
  // Writes `model` to `path` (through AtomicFile, sidecar files first).
  virtual Status emit_model(const Model& model, const std::string& path, const Options& options) const = 0;
};

}  // namespace qforge
