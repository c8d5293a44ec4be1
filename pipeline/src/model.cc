#include "qforge/model.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "qforge/graph.h"
#include "qforge/status.h"

namespace qforge {

const char* name_of(MetaType t) {
  switch (t) {
    case MetaType::U8: return "u8";
    case MetaType::I8: return "i8";
    case MetaType::U16: return "u16";
    case MetaType::I16: return "i16";
    case MetaType::U32: return "u32";
    case MetaType::I32: return "i32";
    case MetaType::F32: return "f32";
    case MetaType::Bool: return "bool";
    case MetaType::String: return "string";
    case MetaType::Array: return "array";
    case MetaType::U64: return "u64";
    case MetaType::I64: return "i64";
    case MetaType::F64: return "f64";
  }
  return "?";
}

std::optional<int64_t> MetaValue::as_int() const {
  switch (type) {
    case MetaType::U8:
    case MetaType::U16:
    case MetaType::U32:
    case MetaType::U64:
    case MetaType::Bool: return static_cast<int64_t>(u);
    case MetaType::I8:
    case MetaType::I16:
    case MetaType::I32:
    case MetaType::I64: return i;
    default: return std::nullopt;
  }
}

std::string MetaValue::summary(size_t max_items) const {
  std::ostringstream os;
  switch (type) {
    case MetaType::U8:
    case MetaType::U16:
    case MetaType::U32:
    case MetaType::U64: os << u; break;
    case MetaType::I8:
    case MetaType::I16:
    case MetaType::I32:
    case MetaType::I64: os << i; break;
    case MetaType::F32:
    case MetaType::F64: os << f; break;
    case MetaType::Bool: os << (u ? "true" : "false"); break;
    case MetaType::String: {
      std::string v = s.size() > 80 ? s.substr(0, 77) + "..." : s;
      os << '"';
      for (char c : v) {
        if (c == '"' || c == '\\')
          os << '\\' << c;
        else if (static_cast<unsigned char>(c) < 0x20)
          os << "\\x" << std::hex << (int)(unsigned char)c << std::dec;
        else
          os << c;
      }
      os << '"';
      break;
    }
    case MetaType::Array:
      if (array.size() > max_items) {
        os << "[" << array.size() << " x " << name_of(elem) << "]";
      } else {
        os << "[";
        for (size_t k = 0; k < array.size(); ++k) os << (k ? ", " : "") << array[k].summary(max_items);
        os << "]";
      }
      break;
  }
  return os.str();
}

bool MetaValue::operator==(const MetaValue& o) const {
  if (type != o.type) return false;
  switch (type) {
    case MetaType::F32:
    case MetaType::F64: return std::memcmp(&f, &o.f, sizeof f) == 0;
    case MetaType::String: return s == o.s;
    case MetaType::Array: return elem == o.elem && array == o.array;
    default: return u == o.u && i == o.i;
  }
}

// ---------------------------------------------------------------- blobs
namespace {

class OwnedBlob : public Blob {
 public:
  explicit OwnedBlob(std::vector<uint8_t> b) : bytes_(std::move(b)) {}
  const uint8_t* data() const override { return bytes_.data(); }
  uint64_t size() const override { return bytes_.size(); }

 private:
  std::vector<uint8_t> bytes_;
};

class SliceBlob : public Blob {
 public:
  SliceBlob(BlobPtr parent, uint64_t off, uint64_t n) : parent_(std::move(parent)), off_(off), n_(n) {}
  const uint8_t* data() const override { return parent_->data() + off_; }
  uint64_t size() const override { return n_; }
  void release_pages() const override { parent_->release_range(off_, n_); }
  void release_range(uint64_t offset, uint64_t n) const override {
    if (offset >= n_) return;
    parent_->release_range(off_ + offset, std::min(n, n_ - offset));
  }
  void release_source() const override { parent_->release_source(); }

 private:
  BlobPtr parent_;
  uint64_t off_, n_;
};

}  // namespace

BlobPtr make_blob(std::vector<uint8_t> bytes) { return std::make_shared<OwnedBlob>(std::move(bytes)); }

BlobPtr make_blob(const void* bytes, uint64_t n) {
  const auto* p = static_cast<const uint8_t*>(bytes);
  return make_blob(std::vector<uint8_t>(p, p + n));
}

BlobPtr slice_blob(BlobPtr parent, uint64_t offset, uint64_t size) {
  if (!parent || offset > parent->size() || size > parent->size() - offset)
    throw Error("internal error: slice [" + std::to_string(offset) + ", +" + std::to_string(size) +
                ") outside a blob of " + std::to_string(parent ? parent->size() : 0) + " bytes");
  return std::make_shared<SliceBlob>(std::move(parent), offset, size);
}

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = static_cast<uint64_t>(st.st_size);
  if (m->size_ > 0) {
    void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw Error(path + ": cannot map " + std::to_string(m->size_) + " bytes: " + std::strerror(e));
    }
    m->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return m;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void MappedFile::release_pages() const { release_range(0, size_); }

void MappedFile::release_range(uint64_t offset, uint64_t n) const {
  if (!data_ || n == 0 || offset >= size_) return;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  uint64_t begin = (offset + page - 1) / page * page;
  uint64_t end = std::min(size_, offset + n);
  if (end != size_) end = end / page * page;  // the last page may be shared with the next tensor
  if (end <= begin) return;
  ::madvise(const_cast<uint8_t*>(data_) + begin, end - begin, MADV_DONTNEED);
}

// ---------------------------------------------------------------- tensors
uint64_t Tensor::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

uint64_t Tensor::nbytes() const {
  auto b = byte_size(type, numel());
  if (!b) throw Error("tensor '" + name + "': byte size overflows");
  return *b;
}

int64_t Tensor::rows() const {
  if (shape.empty() || shape.back() == 0) return 1;
  return static_cast<int64_t>(numel() / static_cast<uint64_t>(shape.back()));
}

BlobPtr Tensor::bytes() const {
  if (data) return data;
  if (producer) {
    std::string error;
    BlobPtr b = producer(error);
    if (!b) throw Error(error.empty() ? "tensor '" + name + "': its producer returned no data" : error);
    return b;
  }
  throw Error("tensor '" + name + "' has no data");
}

// ---------------------------------------------------------------- model
const MetaValue* Model::meta(const std::string& key) const {
  for (const auto& kv : metadata)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

void Model::set_meta(const std::string& key, MetaValue v) {
  for (auto& kv : metadata)
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  metadata.emplace_back(key, std::move(v));
}

bool Model::erase_meta(const std::string& key) {
  for (auto it = metadata.begin(); it != metadata.end(); ++it)
    if (it->first == key) {
      metadata.erase(it);
      return true;
    }
  return false;
}

Tensor* Model::tensor(const std::string& name) {
  for (auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const Tensor* Model::tensor(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

Graph& Model::mutable_graph() {
  if (!graph)
    graph = std::make_shared<Graph>();
  else if (graph.use_count() > 1)
    graph = std::make_shared<Graph>(*graph);
  return *graph;
}

uint64_t Model::parameter_count() const {
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.numel();
  return n;
}

uint64_t Model::tensor_bytes() const {
  uint64_t n = 0;
  for (const auto& t : tensors) n += t.nbytes();
  return n;
}

}  // namespace qforge
