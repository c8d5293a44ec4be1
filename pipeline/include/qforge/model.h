// The format-neutral model: ordered metadata, a tensor table, an optional graph.
//
// Tensor data is a Blob: a view into a memory-mapped input, an owned buffer,
// or produced lazily on demand. Copying a Model is cheap (blobs and the graph
// are shared); a pass that changes the graph calls mutable_graph(), which
// copies it first if another model shares it.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qforge/types.h"

namespace qforge {

struct Graph;  // qforge/graph.h

// ---------------------------------------------------------------- metadata
// Value types in GGUF's order (GGUF writes these ids).
enum class MetaType : uint8_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
const char* name_of(MetaType t);

struct MetaValue {
  MetaType type = MetaType::U8;
  uint64_t u = 0;                // U8, U16, U32, U64, Bool
  int64_t i = 0;                 // I8, I16, I32, I64
  double f = 0;                  // F32 (exactly representable), F64
  std::string s;                 // String (bytes; not necessarily UTF-8)
  MetaType elem = MetaType::U8;  // Array: element type
  std::vector<MetaValue> array;  // Array: elements

  static MetaValue of_u32(uint32_t v) {
    MetaValue m;
    m.type = MetaType::U32;
    m.u = v;
    return m;
  }
  static MetaValue of_i32(int32_t v) {
    MetaValue m;
    m.type = MetaType::I32;
    m.i = v;
    return m;
  }
  static MetaValue of_u64(uint64_t v) {
    MetaValue m;
    m.type = MetaType::U64;
    m.u = v;
    return m;
  }
  static MetaValue of_f32(float v) {
    MetaValue m;
    m.type = MetaType::F32;
    m.f = v;
    return m;
  }
  static MetaValue of_bool(bool v) {
    MetaValue m;
    m.type = MetaType::Bool;
    m.u = v;
    return m;
  }
  static MetaValue of_string(std::string v) {
    MetaValue m;
    m.type = MetaType::String;
    m.s = std::move(v);
    return m;
  }
  static MetaValue of_array(MetaType elem, std::vector<MetaValue> v) {
    MetaValue m;
    m.type = MetaType::Array;
    m.elem = elem;
    m.array = std::move(v);
    return m;
  }
  // Integer value of any integer/bool type; nullopt for others.
  std::optional<int64_t> as_int() const;
  // Short human form; long arrays are summarised ("[32000 × string]").
  std::string summary(size_t max_items = 8) const;
  bool operator==(const MetaValue& o) const;
  bool operator!=(const MetaValue& o) const { return !(*this == o); }
};

using Metadata = std::vector<std::pair<std::string, MetaValue>>;  // in file order

// ---------------------------------------------------------------- tensor data
class Blob {
 public:
  virtual ~Blob() = default;
  virtual const uint8_t* data() const = 0;
  virtual uint64_t size() const = 0;
  // Tells the OS the bytes are no longer needed (mapped files drop their
  // pages; owned buffers do nothing). The blob stays valid and readable:
  // dropped pages of a read-only file mapping are read again if touched.
  virtual void release_pages() const {}
  // The same for [offset, offset + n) of this blob, rounded inward to pages.
  virtual void release_range(uint64_t offset, uint64_t n) const {
    (void)offset;
    (void)n;
  }
  // Drops every page of the file this blob is a view of (the kernel may map
  // a large page-cache folio whole, bringing in neighbours of what was read).
  virtual void release_source() const { release_pages(); }
};
using BlobPtr = std::shared_ptr<const Blob>;

// Hands `blob` to `sink(const uint8_t* data, size_t n)` in consecutive pieces
// of 64 MiB, releasing each piece's pages after it (then the whole blob's), so
// that writing a large memory-mapped tensor never keeps it resident whole.
template <class Sink>
void write_releasing(const Blob& blob, Sink&& sink) {
  constexpr uint64_t kPiece = uint64_t{64} << 20;
  for (uint64_t off = 0; off < blob.size(); off += kPiece) {
    const uint64_t n = blob.size() - off < kPiece ? blob.size() - off : kPiece;
    sink(blob.data() + off, static_cast<size_t>(n));
    blob.release_range(off, n);
  }
  blob.release_pages();
}

BlobPtr make_blob(std::vector<uint8_t> bytes);
BlobPtr make_blob(const void* bytes, uint64_t n);  // copies
// A view of [offset, offset+size) of another blob, keeping it alive.
BlobPtr slice_blob(BlobPtr parent, uint64_t offset, uint64_t size);

// A read-only memory map of a whole file. Throws qforge::Error naming the file.
class MappedFile : public Blob {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile() override;
  const uint8_t* data() const override { return data_; }
  uint64_t size() const override { return size_; }
  void release_pages() const override;
  void release_range(uint64_t offset, uint64_t n) const override;
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
};

// ---------------------------------------------------------------- lazy data
// Lazy tensor data: returns the bytes, or null with `error` set to what went
// wrong. A producer is made by one plugin (a pass) and run by another (a
// format's emit), so it must never throw: make it with guarded_producer.
using Producer = std::function<BlobPtr(std::string& error)>;

// Wraps `fn` (a callable returning BlobPtr, which may throw) into a Producer
// that catches inside the library that defines `fn` (this is a template, so it
// is compiled there) and reports "<who>: tensor '<tensor>': <message>".
template <class Fn>
Producer guarded_producer(std::string who, std::string tensor, Fn fn) {
  return
      [who = std::move(who), tensor = std::move(tensor), fn = std::move(fn)](std::string& error) -> BlobPtr {
        try {
          BlobPtr b = fn();
          if (!b) error = who + ": tensor '" + tensor + "': no data was produced";
          return b;
        } catch (const std::exception& e) {
          error = who + ": tensor '" + tensor + "': " + e.what();
        } catch (...) {
          error = who + ": tensor '" + tensor + "': unknown error";
        }
        return nullptr;
      };
}

// ---------------------------------------------------------------- tensor
struct Tensor {
  std::string name;
  std::vector<int64_t> shape;  // outermost first; the last dimension is contiguous
  ElemType type = ElemType::F32;
  BlobPtr data;       // null while a producer is pending
  Producer producer;  // lazy data (e.g. a quantized tensor)

  uint64_t numel() const;
  uint64_t nbytes() const;  // from type and shape
  // The tensor's bytes, running the producer if needed (not cached here:
  // emit calls it once, then drops the result). Throws qforge::Error with the
  // producer's message; use it inside a library, never across a boundary.
  BlobPtr bytes() const;
  // Rows for row-wise encodings: numel / shape.back(); 1 for scalars.
  int64_t row_length() const { return shape.empty() ? 1 : shape.back(); }
  int64_t rows() const;
};

// ---------------------------------------------------------------- model
struct Model {
  std::string format;  // the format it was imported from ("onnx", "gguf")
  std::string source;  // the path it was imported from
  Metadata metadata;
  std::vector<Tensor> tensors;
  std::shared_ptr<Graph> graph;  // null for formats without a graph (GGUF)

  const MetaValue* meta(const std::string& key) const;
  void set_meta(const std::string& key, MetaValue v);  // replaces in place or appends
  bool erase_meta(const std::string& key);
  Tensor* tensor(const std::string& name);
  const Tensor* tensor(const std::string& name) const;
  // Copies the graph if another Model shares it, then returns it.
  Graph& mutable_graph();

  uint64_t parameter_count() const;  // elements of all tensors
  uint64_t tensor_bytes() const;     // bytes of all tensors as encoded
};

}  // namespace qforge
