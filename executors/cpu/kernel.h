// The cpu executor's kernel interface (executors/cpu/README.md).
//
// One KernelTable maps (domain, op type, opset range) to a factory. Each group
// of operators lives in its own ops_<group>.cc defining
//   void register_ops_<group>(qforge::cpu::KernelTable& table);
// (CMake finds the files and generates the calls: nothing else to edit).
//
// A factory runs once per node at prepare time: it reads attributes, may
// precompute from inputs that are constant (initializers, Constant nodes), and
// returns a Kernel. Kernel::run is called per sample: it infers output types
// and shapes from the actual inputs (dynamic dimensions are known there),
// allocates its outputs from the context and computes them. Errors are thrown
// as qforge::Error with a message about the values; the executor prefixes the
// node's name, op type, domain and opset.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qforge/executor.h"
#include "qforge/graph.h"
#include "qforge/status.h"
#include "qforge/types.h"

namespace qforge::cpu {

// ---------------------------------------------------------------- buffers
// A writable blob whose storage returns to its pool when the last reference
// goes (so an intermediate freed after its last consumer is reused by the next
// allocation of a similar size).
class BufferPool;
class Buffer : public Blob {
 public:
  const uint8_t* data() const override { return ptr_; }
  uint64_t size() const override { return size_; }
  uint8_t* mutable_data() const { return ptr_; }
  ~Buffer() override;

 private:
  friend class BufferPool;
  uint8_t* ptr_ = nullptr;
  uint64_t size_ = 0;
  uint64_t capacity_ = 0;
  std::shared_ptr<BufferPool> pool_;
};

class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  // A buffer of at least `bytes` bytes, 64-byte aligned (contents undefined).
  std::shared_ptr<Buffer> get(uint64_t bytes);
  ~BufferPool();
  uint64_t held_bytes() const { return held_; }

 private:
  friend class Buffer;
  void give_back(uint8_t* p, uint64_t capacity);
  std::multimap<uint64_t, uint8_t*> free_;
  uint64_t held_ = 0;  // bytes in free_
};

// ---------------------------------------------------------------- values
// Number of elements of a shape.
inline uint64_t numel_of(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}
// Bytes of `n` elements of `t` (4-bit types packed two per byte).
uint64_t bytes_of(ElemType t, uint64_t n);
// "f32 [1, 3, 224, 224]"
std::string describe(const RunValue& v);
// A RunValue's bytes as writable elements (only for values this kernel made).
template <class T>
T* mutable_as(const RunValue& v) {
  return reinterpret_cast<T*>(const_cast<uint8_t*>(v.data->data()));
}
// Integer elements of a 1-D or scalar tensor of int32/int64 (shapes, axes...).
std::vector<int64_t> to_ints(const RunValue& v, const std::string& what);
// One element of a scalar (or 1-element) numeric tensor as double.
double scalar_as_double(const RunValue& v, const std::string& what);

// ---------------------------------------------------------------- kernels
class KernelContext {
 public:
  KernelContext(const Node& node, int64_t opset, int threads, BufferPool& pool,
                std::vector<const RunValue*> inputs, std::vector<RunValue>& outputs)
      : node(node),
        opset(opset),
        threads(threads),
        pool_(pool),
        inputs_(std::move(inputs)),
        outputs_(outputs) {}

  const Node& node;
  const int64_t opset;
  const int threads;

  size_t num_inputs() const { return inputs_.size(); }
  // Whether optional input `i` is given (present and not "").
  bool has_input(size_t i) const { return i < inputs_.size() && inputs_[i] != nullptr; }
  // Input `i`; an error naming it when it is absent.
  const RunValue& input(size_t i) const;
  size_t num_outputs() const { return outputs_.size(); }
  // Whether output `i` is requested (named in the node).
  bool wants_output(size_t i) const { return i < node.outputs.size() && !node.outputs[i].empty(); }
  // Allocates output `i` (uninitialized) and returns its bytes.
  uint8_t* alloc_output(size_t i, ElemType type, std::vector<int64_t> shape);
  template <class T>
  T* alloc(size_t i, ElemType type, std::vector<int64_t> shape) {
    return reinterpret_cast<T*>(alloc_output(i, type, std::move(shape)));
  }
  // Sets output `i` to an existing value (Identity, Reshape: shares the bytes).
  void set_output(size_t i, RunValue v);
  BufferPool& pool() { return pool_; }
  // Values of the enclosing run, by name (for kernels running subgraphs).
  const std::function<const RunValue*(const std::string&)>* outer = nullptr;

 private:
  BufferPool& pool_;
  std::vector<const RunValue*> inputs_;
  std::vector<RunValue>& outputs_;
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  // Computes the outputs for one sample; throws qforge::Error on bad inputs.
  virtual void run(KernelContext& ctx) = 0;
};

// A prepared subgraph (If/Loop bodies): run with its formal inputs, reading
// outer-scope values from the enclosing run.
class SubgraphRunner {
 public:
  virtual ~SubgraphRunner() = default;
  virtual const std::vector<std::string>& input_names() const = 0;
  virtual const std::vector<std::string>& output_names() const = 0;
  // `outer(name)` resolves values of the enclosing scopes.
  virtual void run(const std::vector<RunValue>& inputs, std::vector<RunValue>& outputs,
                   const std::function<const RunValue*(const std::string&)>& outer) = 0;
};

struct KernelInit {
  const Node& node;
  int64_t opset;
  int threads;
  // Per input: the value when it is known at prepare time (an initializer or a
  // Constant node's output), else null. Valid during the factory call only:
  // keep a copy (RunValue copies share the bytes).
  std::vector<const RunValue*> constants;
  // Prepares a subgraph held by one of this node's attributes.
  // At run time, pass *KernelContext::outer to SubgraphRunner::run.
  std::function<std::unique_ptr<SubgraphRunner>(const Graph&)> prepare_subgraph;
};

// The upper end of an open opset range.
constexpr int64_t kMaxOpset = int64_t{1} << 30;

using KernelFactory = std::function<std::unique_ptr<Kernel>(const KernelInit&)>;
using KernelFn = std::function<void(KernelContext&)>;

class KernelTable {
 public:
  struct Entry {
    std::string domain;  // "" for ai.onnx
    std::string op;
    int64_t since = 1;  // opset range [since, until]
    int64_t until = kMaxOpset;
    KernelFactory factory;
  };
  // Registers a kernel for opsets [since, until] of `domain` ("" = ai.onnx).
  void add(std::string domain, std::string op, int64_t since, int64_t until, KernelFactory factory);
  // A stateless kernel: `fn` runs per sample (attributes read from ctx.node).
  void add_fn(std::string domain, std::string op, int64_t since, int64_t until, KernelFn fn);
  // The entry for `op` at `opset`, or null.
  const Entry* find(const std::string& domain, const std::string& op, int64_t opset) const;
  // Every (domain, op) registered, for `qforge executors`-like listings and tests.
  std::vector<std::pair<std::string, std::string>> ops() const;

 private:
  std::map<std::pair<std::string, std::string>, std::vector<Entry>> entries_;
};

// The table with every ops_<group>.cc registered (built once).
const KernelTable& kernel_table();

// ---------------------------------------------------------------- attributes
int64_t attr_int(const Node& n, const std::string& name, int64_t dflt);
float attr_float(const Node& n, const std::string& name, float dflt);
std::string attr_string(const Node& n, const std::string& name, const std::string& dflt);
std::vector<int64_t> attr_ints(const Node& n, const std::string& name, std::vector<int64_t> dflt = {});
std::vector<float> attr_floats(const Node& n, const std::string& name, std::vector<float> dflt = {});
// The attribute or an error naming it ("attribute 'perm' is required").
const Attribute& attr_required(const Node& n, const std::string& name);

// An error for an attribute value or input type this kernel does not handle;
// never compute a wrong result instead.
[[noreturn]] void unsupported(const std::string& what);

// ---------------------------------------------------------------- helpers
// Normalizes a possibly negative axis against `rank` ("axis 4 is out of range
// for rank 3" otherwise).
int64_t norm_axis(int64_t axis, int64_t rank, const char* what = "axis");
// Numpy-style broadcast of two shapes ("cannot broadcast [2, 3] with [4]").
std::vector<int64_t> broadcast_shapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b);
// Strides (in elements) of `shape` read as `out` (rank-aligned to the right; 0
// on broadcast dimensions).
std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& shape, const std::vector<int64_t>& out);
// Contiguous strides of a shape.
std::vector<int64_t> strides_of(const std::vector<int64_t>& shape);

// Runs fn(begin, end) over [0, n) split across up to `threads` threads (inline
// when n is small or threads <= 1).
void parallel_for(int threads, int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace qforge::cpu
