// The kernel table, buffers and helpers of the cpu executor (kernel.h).
#include "kernel.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <new>

#include "qforge/half.h"

namespace qforge::cpu {

// ---------------------------------------------------------------- buffers
namespace {
constexpr uint64_t kAlign = 64;
// Free buffers kept for reuse, at most (beyond it, freed to the system).
constexpr uint64_t kMaxHeld = uint64_t{1} << 30;
}  // namespace

Buffer::~Buffer() {
  if (pool_)
    pool_->give_back(ptr_, capacity_);
  else
    std::free(ptr_);
}

std::shared_ptr<Buffer> BufferPool::get(uint64_t bytes) {
  auto b = std::shared_ptr<Buffer>(new Buffer());
  b->pool_ = shared_from_this();
  b->size_ = bytes;
  const uint64_t want = std::max<uint64_t>(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  // The smallest free buffer at least this large and not more than twice it.
  auto it = free_.lower_bound(want);
  if (it != free_.end() && it->first <= 2 * want) {
    b->ptr_ = it->second;
    b->capacity_ = it->first;
    held_ -= it->first;
    free_.erase(it);
    return b;
  }
  void* p = std::aligned_alloc(kAlign, want);
  if (!p)
    throw Error("out of memory allocating " + std::to_string(bytes) + " bytes for an intermediate value");
  b->ptr_ = static_cast<uint8_t*>(p);
  b->capacity_ = want;
  return b;
}

void BufferPool::give_back(uint8_t* p, uint64_t capacity) {
  if (held_ + capacity > kMaxHeld) {
    std::free(p);
    return;
  }
  free_.emplace(capacity, p);
  held_ += capacity;
}

BufferPool::~BufferPool() {
  for (auto& kv : free_) std::free(kv.second);
}

// ---------------------------------------------------------------- values
uint64_t bytes_of(ElemType t, uint64_t n) {
  if (t == ElemType::I4 || t == ElemType::U4) return (n + 1) / 2;
  const ElemTraits& tr = traits(t);
  if (tr.block_size != 1 || tr.type_size == 0)
    throw Error(std::string("element type ") + tr.name + " has no fixed size");
  return n * tr.type_size;
}

std::string describe(const RunValue& v) { return std::string(name_of(v.type)) + " " + shape_str(v.shape); }

std::vector<int64_t> to_ints(const RunValue& v, const std::string& what) {
  if (v.shape.size() > 1) throw Error(what + " must be a 1-D tensor, found " + describe(v));
  const uint64_t n = v.numel();
  std::vector<int64_t> out(n);
  if (v.type == ElemType::I64) {
    std::memcpy(out.data(), v.data->data(), n * 8);
  } else if (v.type == ElemType::I32) {
    for (uint64_t i = 0; i < n; ++i) out[i] = v.as<int32_t>()[i];
  } else {
    throw Error(what + " must be int64 or int32, found " + describe(v));
  }
  return out;
}

double scalar_as_double(const RunValue& v, const std::string& what) {
  if (v.numel() != 1) throw Error(what + " must have one element, found " + describe(v));
  switch (v.type) {
    case ElemType::F32: return v.as<float>()[0];
    case ElemType::F64: return v.as<double>()[0];
    case ElemType::F16: return fp16_to_fp32(v.as<uint16_t>()[0]);
    case ElemType::BF16: return bf16_to_fp32(v.as<uint16_t>()[0]);
    case ElemType::I64: return static_cast<double>(v.as<int64_t>()[0]);
    case ElemType::I32: return v.as<int32_t>()[0];
    case ElemType::I16: return v.as<int16_t>()[0];
    case ElemType::I8: return v.as<int8_t>()[0];
    case ElemType::U8: return v.as<uint8_t>()[0];
    case ElemType::U16: return v.as<uint16_t>()[0];
    case ElemType::U32: return v.as<uint32_t>()[0];
    case ElemType::U64: return static_cast<double>(v.as<uint64_t>()[0]);
    case ElemType::Bool: return v.as<uint8_t>()[0] ? 1 : 0;
    default: throw Error(what + ": element type " + name_of(v.type) + " is not numeric");
  }
}

// ---------------------------------------------------------------- context
const RunValue& KernelContext::input(size_t i) const {
  if (!has_input(i)) throw Error("input " + std::to_string(i) + " is required but not given");
  return *inputs_[i];
}

uint8_t* KernelContext::alloc_output(size_t i, ElemType type, std::vector<int64_t> shape) {
  if (i >= outputs_.size()) throw Error("output " + std::to_string(i) + " does not exist on this node");
  for (int64_t d : shape)
    if (d < 0)
      throw Error("output " + std::to_string(i) + " would have a negative dimension " + shape_str(shape));
  RunValue& v = outputs_[i];
  v.type = type;
  v.shape = std::move(shape);
  auto buf = pool_.get(bytes_of(type, v.numel()));
  uint8_t* p = buf->mutable_data();
  v.data = std::move(buf);
  return p;
}

void KernelContext::set_output(size_t i, RunValue v) {
  if (i >= outputs_.size()) throw Error("output " + std::to_string(i) + " does not exist on this node");
  outputs_[i] = std::move(v);
}

// ---------------------------------------------------------------- table
void KernelTable::add(std::string domain, std::string op, int64_t since, int64_t until,
                      KernelFactory factory) {
  if (domain == "ai.onnx") domain.clear();
  auto& list = entries_[{domain, op}];
  for (const Entry& e : list)
    if (since <= e.until && e.since <= until)
      throw Error("cpu executor: kernel " + op + " (domain '" + domain +
                  "') registered twice for overlapping opsets");
  list.push_back({domain, op, since, until, std::move(factory)});
}

namespace {
class FnKernel : public Kernel {
 public:
  explicit FnKernel(KernelFn fn) : fn_(std::move(fn)) {}
  void run(KernelContext& ctx) override { fn_(ctx); }

 private:
  KernelFn fn_;
};
}  // namespace

void KernelTable::add_fn(std::string domain, std::string op, int64_t since, int64_t until, KernelFn fn) {
  add(std::move(domain), std::move(op), since, until,
      [fn = std::move(fn)](const KernelInit&) { return std::make_unique<FnKernel>(fn); });
}

const KernelTable::Entry* KernelTable::find(const std::string& domain, const std::string& op,
                                            int64_t opset) const {
  auto it = entries_.find({domain == "ai.onnx" ? std::string() : domain, op});
  if (it == entries_.end()) return nullptr;
  for (const Entry& e : it->second)
    if (e.since <= opset && opset <= e.until) return &e;
  return nullptr;
}

std::vector<std::pair<std::string, std::string>> KernelTable::ops() const {
  std::vector<std::pair<std::string, std::string>> v;
  for (const auto& kv : entries_) v.push_back(kv.first);
  return v;
}

// ---------------------------------------------------------------- attributes
namespace {
const Attribute* find_attr(const Node& n, const std::string& name, Attribute::Type type,
                           const char* type_name) {
  const Attribute* a = n.attr(name);
  if (a && a->type != type) throw Error("attribute '" + name + "' must be of type " + type_name);
  return a;
}
}  // namespace

int64_t attr_int(const Node& n, const std::string& name, int64_t dflt) {
  const Attribute* a = find_attr(n, name, Attribute::Type::Int, "int");
  return a ? a->i : dflt;
}
float attr_float(const Node& n, const std::string& name, float dflt) {
  const Attribute* a = find_attr(n, name, Attribute::Type::Float, "float");
  return a ? a->f : dflt;
}
std::string attr_string(const Node& n, const std::string& name, const std::string& dflt) {
  const Attribute* a = find_attr(n, name, Attribute::Type::String, "string");
  return a ? a->s : dflt;
}
std::vector<int64_t> attr_ints(const Node& n, const std::string& name, std::vector<int64_t> dflt) {
  const Attribute* a = find_attr(n, name, Attribute::Type::Ints, "ints");
  return a ? a->ints : dflt;
}
std::vector<float> attr_floats(const Node& n, const std::string& name, std::vector<float> dflt) {
  const Attribute* a = find_attr(n, name, Attribute::Type::Floats, "floats");
  return a ? a->floats : dflt;
}
const Attribute& attr_required(const Node& n, const std::string& name) {
  const Attribute* a = n.attr(name);
  if (!a) throw Error("attribute '" + name + "' is required");
  return *a;
}

void unsupported(const std::string& what) {
  throw Error(what + " is not supported by the cpu executor (executors/cpu/README.md lists what is)");
}

// ---------------------------------------------------------------- helpers
int64_t norm_axis(int64_t axis, int64_t rank, const char* what) {
  if (axis < -rank || axis >= rank)
    throw Error(std::string(what) + " " + std::to_string(axis) + " is out of range for rank " +
                std::to_string(rank));
  return axis < 0 ? axis + rank : axis;
}

std::vector<int64_t> broadcast_shapes(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  const size_t r = std::max(a.size(), b.size());
  std::vector<int64_t> out(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da == db || db == 1)
      out[i] = da;
    else if (da == 1)
      out[i] = db;
    else
      throw Error("cannot broadcast " + shape_str(a) + " with " + shape_str(b));
  }
  return out;
}

std::vector<int64_t> strides_of(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size());
  int64_t acc = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

std::vector<int64_t> broadcast_strides(const std::vector<int64_t>& shape, const std::vector<int64_t>& out) {
  std::vector<int64_t> s(out.size(), 0);
  const std::vector<int64_t> own = strides_of(shape);
  const size_t off = out.size() - shape.size();
  for (size_t i = 0; i < shape.size(); ++i) s[off + i] = shape[i] == 1 ? 0 : own[i];
  return s;
}

void parallel_for(int threads, int64_t n, int64_t min_chunk,
                  const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t max_parts = min_chunk > 0 ? std::max<int64_t>(1, n / min_chunk) : n;
  const int parts = static_cast<int>(std::min<int64_t>(std::max(1, threads), max_parts));
  if (parts <= 1) {
    fn(0, n);
    return;
  }
#pragma omp parallel for num_threads(parts) schedule(static)
  for (int p = 0; p < parts; ++p) {
    const int64_t b = n * p / parts, e = n * (p + 1) / parts;
    fn(b, e);
  }
}

}  // namespace qforge::cpu
