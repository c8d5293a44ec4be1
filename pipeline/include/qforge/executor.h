// The Executor seam: runs a model's graph on samples, for calibration and
// evaluation (docs/architecture.md, "The seams").
//
// An executor prepares a model once (shapes resolved as far as the inputs
// allow, kernels chosen, memory planned) and then runs it on many samples.
// Intermediates are freed after their last use; an Observer sees each float
// intermediate as it is produced, so a calibrator never needs the executor to
// keep them. Executors are registered like formats and passes, so a plugin can
// add one (backed by a vendor runtime, say); passes reach the build's executor
// through PassContext::executor.
//
// Nothing here throws across the seam: prepare and run return a Status.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qforge/model.h"
#include "qforge/status.h"
#include "qforge/types.h"

namespace qforge {

struct ValueInfo;  // qforge/graph.h

// A tensor at run time: element type, shape (all dimensions known) and its
// bytes in C order (4-bit types packed two per byte, as ONNX stores them).
struct RunValue {
  ElemType type = ElemType::F32;
  std::vector<int64_t> shape;
  BlobPtr data;

  uint64_t numel() const {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    return n;
  }
  // The bytes as elements of T (the caller knows the type).
  template <class T>
  const T* as() const {
    return reinterpret_cast<const T*>(data->data());
  }
};

// Values by name, in order (a model's inputs or outputs).
using NamedValues = std::vector<std::pair<std::string, RunValue>>;

// Sees intermediates as they are produced. Calls come one at a time for a
// run (from whichever thread produced the value); the value is valid only
// during the call.
class Observer {
 public:
  virtual ~Observer() = default;
  // Whether to show this value (asked once per value at the first run).
  // Default: every floating-point value, the graph's inputs and outputs too.
  virtual bool wants(const std::string& value, ElemType type) const {
    (void)value;
    return type == ElemType::F32 || type == ElemType::F16 || type == ElemType::BF16 || type == ElemType::F64;
  }
  virtual void observe(const std::string& value, const RunValue& v) = 0;
};

struct ExecOptions {
  int threads = 1;       // from the build's thread budget
  bool profile = false;  // keep time per node and op type (PreparedModel::profile_report)
};

class PreparedModel {
 public:
  virtual ~PreparedModel() = default;
  // The graph's inputs and outputs (names, types, shapes as declared).
  virtual std::vector<std::pair<std::string, std::vector<int64_t>>> input_shapes() const = 0;
  virtual std::vector<std::string> input_names() const = 0;
  virtual std::vector<std::string> output_names() const = 0;
  // Runs one sample: `inputs` by name (every graph input without an
  // initializer), `outputs` filled in the graph's output order. Dynamic
  // dimensions are resolved from the inputs. Errors name the node, its op
  // type, domain and opset.
  virtual Status run(const NamedValues& inputs, NamedValues& outputs, Observer* observer = nullptr) = 0;
  // Where the time went (per op type and per node) when ExecOptions::profile
  // was set; empty otherwise.
  virtual std::string profile_report() const { return {}; }
};

class Executor {
 public:
  virtual ~Executor() = default;
  virtual std::string name() const = 0;  // "cpu"
  virtual std::string description() const = 0;
  // Checks every operator is supported (an unsupported one is an error
  // naming the node, op type, domain and opset) and prepares the graph.
  virtual Status prepare(const Model& model, const ExecOptions& options,
                         std::unique_ptr<PreparedModel>& out) const = 0;
};

}  // namespace qforge
