// ONNX TensorProto samples, datasets of sample files, and the sample/input check.
#include "qforge/dataset.h"

#include <fmt/format.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "npy_internal.h"
#include "qforge/status.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the dataset readers hand out little-endian bytes as they are in memory");

namespace qforge {
namespace {

namespace fs = std::filesystem;
using detail::printable;

// ---------------------------------------------------------------- TensorProto
const char* field_for(ElemType t) {
  switch (t) {
    case ElemType::F32:
    case ElemType::Complex64: return "float_data";
    case ElemType::F64:
    case ElemType::Complex128: return "double_data";
    case ElemType::I64: return "int64_data";
    case ElemType::U32:
    case ElemType::U64: return "uint64_data";
    default: return "int32_data";
  }
}

template <class T>
std::vector<uint8_t> bytes_of(const google::protobuf::RepeatedField<T>& f) {
  std::vector<uint8_t> out(static_cast<size_t>(f.size()) * sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), f.data(), out.size());
  return out;
}

// int32_data holds one element per value for the 8/16-bit types (sign-extended
// integers, or the bit pattern of f16/bf16/f8), two 4-bit elements per value
// for int4/uint4. Values out of range are refused rather than truncated.
std::vector<uint8_t> narrow_int32(const onnx::TensorProto& t, ElemType type, uint64_t numel,
                                  const std::string& who) {
  const auto& f = t.int32_data();
  int64_t lo = 0, hi = 0;
  uint32_t width = 1;
  switch (type) {
    case ElemType::I8:
      lo = INT8_MIN;
      hi = INT8_MAX;
      break;
    case ElemType::U8:
    case ElemType::F8E4M3FN:
    case ElemType::F8E4M3FNUZ:
    case ElemType::F8E5M2:
    case ElemType::F8E5M2FNUZ:
    case ElemType::I4:
    case ElemType::U4:
      lo = 0;
      hi = UINT8_MAX;
      break;
    case ElemType::Bool:
      lo = INT32_MIN;
      hi = INT32_MAX;
      break;  // non-zero is true
    case ElemType::I16:
      lo = INT16_MIN;
      hi = INT16_MAX;
      width = 2;
      break;
    case ElemType::U16:
    case ElemType::F16:
    case ElemType::BF16:
      lo = 0;
      hi = UINT16_MAX;
      width = 2;
      break;
    case ElemType::I32:
      lo = INT32_MIN;
      hi = INT32_MAX;
      width = 4;
      break;
    default: throw Error(fmt::format("{}: int32_data cannot hold {} elements", who, name_of(type)));
  }
  const bool packed4 = type == ElemType::I4 || type == ElemType::U4;
  const uint64_t want = packed4 ? (numel + 1) / 2 : numel;
  if (static_cast<uint64_t>(f.size()) != want)
    throw Error(fmt::format("{}: int32_data has {} values, the shape needs {}", who, f.size(), want));
  std::vector<uint8_t> out(static_cast<size_t>(want) * width);
  for (int i = 0; i < f.size(); ++i) {
    int64_t v = f.Get(i);
    if (packed4) v &= 0xFF;  // two nibbles, low first
    if (v < lo || v > hi)
      throw Error(fmt::format("{}: int32_data[{}] = {} is out of range for {} [{}, {}]", who, i, v,
                              name_of(type), lo, hi));
    if (type == ElemType::Bool) v = v != 0;
    uint32_t u = static_cast<uint32_t>(v);
    std::memcpy(out.data() + static_cast<size_t>(i) * width, &u, width);  // little-endian host
  }
  return out;
}

}  // namespace

Array read_tensor_pb_bytes(BlobPtr bytes, const std::string& source) {
  const uint64_t n = bytes ? bytes->size() : 0;
  if (n > static_cast<uint64_t>(INT_MAX))
    throw Error(
        fmt::format("{}: {} bytes; a TensorProto file is at most 2 GiB (protobuf's limit)", source, n));
  onnx::TensorProto t;
  if (!t.ParseFromArray(n ? bytes->data() : nullptr, static_cast<int>(n)))
    throw Error(fmt::format("{}: not a valid ONNX TensorProto (protobuf parse failed; {} bytes)", source, n));
  const std::string who =
      t.name().empty() ? source : fmt::format("{}: tensor '{}'", source, printable(t.name(), 80));
  if (t.data_location() == onnx::TensorProto::EXTERNAL || t.external_data_size() > 0)
    throw Error(
        fmt::format("{}: stores its data externally; qforge reads samples with the data "
                    "inside the file (raw_data)",
                    who));
  if (t.has_segment())
    throw Error(fmt::format("{}: is a segment of a larger tensor; segments are not supported", who));
  if (t.data_type() == onnx::TensorProto::UNDEFINED)
    throw Error(
        fmt::format("{}: data_type is 0 (UNDEFINED); expected an element type such as "
                    "1 (FLOAT)",
                    who));
  if (t.data_type() == onnx::TensorProto::STRING)
    throw Error(fmt::format("{}: string tensors are not supported as samples", who));
  auto type = elem_from_onnx(t.data_type());
  if (!type || traits(*type).type_size == 0)
    throw Error(fmt::format("{}: unsupported data_type {}", who, t.data_type()));

  Array a;
  a.source = source;
  a.name = t.name();
  a.type = *type;
  const bool empty = std::find(t.dims().begin(), t.dims().end(), 0) != t.dims().end();
  uint64_t numel = empty ? 0 : 1;
  for (int i = 0; i < t.dims_size(); ++i) {
    int64_t d = t.dims(i);
    if (d < 0) throw Error(fmt::format("{}: dims[{}] = {} is negative", who, i, d));
    uint64_t ud = static_cast<uint64_t>(d);
    if (!empty && numel > UINT64_MAX / ud)
      throw Error(fmt::format("{}: dims have more elements than fit in 64 bits", who));
    numel *= ud;
    a.shape.push_back(d);
  }
  auto nbytes = byte_size(a.type, numel);
  if (!nbytes) throw Error(fmt::format("{}: dims are more bytes than fit in 64 bits", who));

  struct Field {
    const char* name;
    int count;
  };
  const Field typed[] = {{"float_data", t.float_data_size()},   {"int32_data", t.int32_data_size()},
                         {"int64_data", t.int64_data_size()},   {"double_data", t.double_data_size()},
                         {"uint64_data", t.uint64_data_size()}, {"string_data", t.string_data_size()}};
  const Field* used = nullptr;
  for (const auto& f : typed) {
    if (f.count == 0) continue;
    if (used)
      throw Error(fmt::format("{}: has both {} and {}; expected one data field", who, used->name, f.name));
    used = &f;
  }
  if (t.has_raw_data() && used)
    throw Error(fmt::format("{}: has both raw_data and {}; expected one", who, used->name));

  std::vector<uint8_t> out;
  if (t.has_raw_data() || (!used && numel == 0)) {
    if (t.raw_data().size() != *nbytes)
      throw Error(fmt::format("{}: raw_data has {} bytes, {} {} needs {}", who, t.raw_data().size(),
                              name_of(a.type), shape_str(a.shape), *nbytes));
    a.data =
        detail::aligned_blob(make_blob(t.raw_data().data(), t.raw_data().size()), traits(a.type).type_size);
    return a;
  }
  const char* want = field_for(a.type);
  if (!used)
    throw Error(fmt::format("{}: has no data: neither raw_data nor {} ({} {} needs {} values)", who, want,
                            name_of(a.type), shape_str(a.shape), numel));
  if (std::strcmp(used->name, want) != 0)
    throw Error(fmt::format("{}: a {} tensor keeps its values in {}, found {}", who, name_of(a.type), want,
                            used->name));
  const uint64_t per = a.type == ElemType::Complex64 || a.type == ElemType::Complex128 ? 2 : 1;
  auto check_count = [&](int count) {
    if (numel > UINT64_MAX / per || static_cast<uint64_t>(count) != numel * per)
      throw Error(fmt::format("{}: {} has {} values, {} {} needs {}", who, want, count, name_of(a.type),
                              shape_str(a.shape), numel * per));
  };
  switch (a.type) {
    case ElemType::F32:
    case ElemType::Complex64:
      check_count(t.float_data_size());
      out = bytes_of(t.float_data());
      break;
    case ElemType::F64:
    case ElemType::Complex128:
      check_count(t.double_data_size());
      out = bytes_of(t.double_data());
      break;
    case ElemType::I64:
      check_count(t.int64_data_size());
      out = bytes_of(t.int64_data());
      break;
    case ElemType::U64:
      check_count(t.uint64_data_size());
      out = bytes_of(t.uint64_data());
      break;
    case ElemType::U32: {
      check_count(t.uint64_data_size());
      out.resize(numel * 4);
      for (int i = 0; i < t.uint64_data_size(); ++i) {
        uint64_t v = t.uint64_data(i);
        if (v > UINT32_MAX)
          throw Error(fmt::format("{}: uint64_data[{}] = {} is out of range for u32", who, i, v));
        uint32_t u = static_cast<uint32_t>(v);
        std::memcpy(out.data() + static_cast<size_t>(i) * 4, &u, 4);
      }
      break;
    }
    default: out = narrow_int32(t, a.type, numel, who);
  }
  a.data = make_blob(std::move(out));
  return a;
}

Array read_tensor_pb(const std::string& path) { return read_tensor_pb_bytes(MappedFile::open(path), path); }

// ---------------------------------------------------------------- datasets
namespace {

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  for (auto& c : e) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return e;
}

// "input_12.pb" -> 12; -1 when the name is not input_<k>.pb.
long input_number(const std::string& name, const char* prefix) {
  const size_t plen = std::strlen(prefix);
  if (name.size() <= plen + 3 || name.compare(0, plen, prefix) != 0 ||
      name.compare(name.size() - 3, 3, ".pb") != 0)
    return -1;
  std::string digits = name.substr(plen, name.size() - plen - 3);
  if (digits.empty() || digits.size() > 6 || (digits.size() > 1 && digits[0] == '0')) return -1;
  for (char c : digits)
    if (c < '0' || c > '9') return -1;
  return std::stol(digits);
}

// input_0.pb, input_1.pb, ... of a test-data directory, in index order.
std::vector<fs::path> test_data_inputs(const fs::path& dir) {
  std::vector<std::pair<long, fs::path>> found;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    long k = input_number(name, "input_");
    if (k >= 0) {
      found.emplace_back(k, it->path());
    } else if (input_number(name, "output_") < 0) {
      throw Error(
          fmt::format("{}: unexpected entry '{}' in a test-data directory (expected "
                      "input_0.pb, input_1.pb, ... and optionally output_<k>.pb)",
                      dir.string(), printable(name, 80)));
    }
  }
  if (ec) throw Error(fmt::format("{}: cannot list: {}", dir.string(), ec.message()));
  std::sort(found.begin(), found.end());
  if (found.empty())
    throw Error(fmt::format("{}: a test-data directory needs input_0.pb (none found)", dir.string()));
  for (size_t i = 0; i < found.size(); ++i)
    if (found[i].first != static_cast<long>(i))
      throw Error(
          fmt::format("{}: input_{}.pb is missing (found input_{}.pb)", dir.string(), i, found[i].first));
  std::vector<fs::path> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

// A directory of only input_<k>.pb and output_<k>.pb files, with at least one
// of each, is itself one test-data sample (ONNX's test_data_set_0 layout).
bool is_test_data_dir(const fs::path& dir) {
  bool inputs = false, outputs = false;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    std::error_code ec2;
    if (!fs::is_regular_file(it->path(), ec2)) return false;
    if (input_number(name, "input_") >= 0)
      inputs = true;
    else if (input_number(name, "output_") >= 0)
      outputs = true;
    else
      return false;
  }
  return !ec && inputs && outputs;
}

}  // namespace

Sample Dataset::load(size_t i) const {
  if (i >= files.size())
    throw Error(fmt::format("dataset '{}': sample {} does not exist ({} samples)", name, i, files.size()));
  const fs::path path(files[i]);
  Sample s;
  s.source = files[i];
  if (images) {
    Array a = load_image(files[i], *images);
    a.name = input;
    a.index = 0;
    s.arrays.push_back(std::move(a));
    return s;
  }
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    int k = 0;
    for (const auto& f : test_data_inputs(path)) {
      Array a = read_tensor_pb(f.string());
      a.index = k++;
      s.arrays.push_back(std::move(a));
    }
    return s;
  }
  const std::string ext = lower_ext(path);
  if (ext == ".npy" || ext == ".pb") {
    Array a = ext == ".npy" ? read_npy(files[i]) : read_tensor_pb(files[i]);
    a.name = input;  // a single-array file feeds the dataset's input
    a.index = 0;
    s.arrays.push_back(std::move(a));
  } else if (ext == ".npz") {
    s.arrays = read_npz(files[i]);
  } else {
    throw Error(
        fmt::format("{}: unknown sample file type '{}' (expected .npy, .npz, .pb or an "
                    "ONNX test-data directory)",
                    files[i], path.extension().string()));
  }
  return s;
}

Dataset dataset_from_dir(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error(fmt::format("{}: not a directory{}", dir, fs::exists(dir, ec) ? "" : " (it does not exist)"));
  Dataset d;
  d.name = dir;
  if (is_test_data_dir(dir)) {  // `--data test_data_set_0`: the directory is the one sample
    d.files.push_back(dir);
    return d;
  }
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& p = it->path();
    const std::string name = p.filename().string();
    if (name.empty() || name[0] == '.') continue;
    std::error_code ec2;
    if (fs::is_directory(p, ec2)) {
      test_data_inputs(p);  // says now, not at sample k, that it is not a test-data directory
      d.files.push_back(p.string());
      continue;
    }
    const std::string ext = lower_ext(p);
    if (ext != ".npy" && ext != ".npz" && ext != ".pb")
      throw Error(
          fmt::format("{}: unknown sample file type '{}' (a data directory holds .npy, "
                      ".npz and .pb files and ONNX test-data directories)",
                      p.string(), p.extension().string()));
    d.files.push_back(p.string());
  }
  if (ec) throw Error(fmt::format("{}: cannot list: {}", dir, ec.message()));
  if (d.files.empty())
    throw Error(
        fmt::format("{}: no samples (expected .npy, .npz or .pb files or ONNX test-data "
                    "directories)",
                    dir));
  std::sort(d.files.begin(), d.files.end());
  return d;
}

// ---------------------------------------------------------------- checks
void check_sample(const Array& array, const std::string& input_name, ElemType expected,
                  const std::vector<int64_t>& expected_shape) {
  bool ok = array.type == expected && array.shape.size() == expected_shape.size();
  for (size_t i = 0; ok && i < expected_shape.size(); ++i)
    if (expected_shape[i] >= 0 && expected_shape[i] != array.shape[i]) ok = false;
  if (!ok)
    throw Error(fmt::format("{}: input '{}' expects {} {}, found {} {}", array.source, input_name,
                            name_of(expected), shape_str(expected_shape), name_of(array.type),
                            shape_str(array.shape)));
}

NamedValues bind_sample(const Sample& sample, const std::string& dataset_input,
                        const std::vector<std::pair<std::string, std::vector<int64_t>>>& model_inputs) {
  NamedValues in;
  for (const Array& a : sample.arrays) {
    std::string name = a.name;
    if (name.empty()) {
      if (a.index < 0 || static_cast<size_t>(a.index) >= model_inputs.size())
        throw Error(a.source + ": input " + std::to_string(a.index) + " does not exist (the model has " +
                    std::to_string(model_inputs.size()) + " inputs)");
      name = model_inputs[static_cast<size_t>(a.index)].first;
    }
    bool known = false;
    for (const auto& [n, dims] : model_inputs) known = known || n == name;
    if (!known) {
      if (sample.arrays.size() == 1 && !model_inputs.empty() && a.index == 0 && dataset_input.empty()) {
        name = model_inputs[0].first;
      } else {
        std::string names;
        for (const auto& [n, dims] : model_inputs) names += (names.empty() ? "'" : ", '") + n + "'";
        throw Error(a.source + ": the model has no input '" + name + "' (its inputs: " + names + ")");
      }
    }
    RunValue v;
    v.type = a.type;
    v.shape = a.shape;
    v.data = a.data;
    in.emplace_back(name, std::move(v));
  }
  return in;
}

}  // namespace qforge
