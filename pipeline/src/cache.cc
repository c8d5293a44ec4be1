// Key record format (keys/<node key>), one item per line:
//   qforge-cache-entry 2
//   file <digest hex> <size> <suffix or '-'>
//   metric <name> <value>     (the value is the last word: %.17g, "inf" too)
//   note <text>
//   warning <text>
//   skip <pass> TAB <reason> TAB <what>
//   bpw <bits per weight>
//   seconds <seconds>
// Texts have newlines and tabs replaced by spaces. An unknown first line
// means the record is ignored (rebuilt), and lookup says so.
#include "qforge/cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "qforge/atomic_file.h"
#include "qforge/status.h"

namespace fs = std::filesystem;

namespace qforge {

namespace {
constexpr const char* kEntryHeader = "qforge-cache-entry 2";

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\t' || c == '\r') c = ' ';
  return s;
}

Digest parse_hex(const std::string& hex) {
  Digest d;
  if (hex.size() != 32) return d;
  d.hi = std::stoull(hex.substr(0, 16), nullptr, 16);
  d.lo = std::stoull(hex.substr(16), nullptr, 16);
  return d;
}
}  // namespace

void copy_file_atomic(const std::string& from, const std::string& to) {
  int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) throw Error(from + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  ::fstat(in, &st);
  try {
    AtomicFile out(to);
    uint64_t left = static_cast<uint64_t>(st.st_size);
    while (left > 0) {
      ssize_t n = ::copy_file_range(in, nullptr, out.fd(), nullptr, left, 0);
      if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) {
        // Fall back to read/write.
        std::vector<char> buf(1 << 20);
        off_t off = static_cast<off_t>(st.st_size - left);
        while (left > 0) {
          ssize_t r = ::pread(in, buf.data(), std::min<uint64_t>(buf.size(), left), off);
          if (r <= 0) throw Error(from + ": read failed: " + std::strerror(errno));
          out.pwrite(buf.data(), static_cast<size_t>(r), static_cast<uint64_t>(off));
          off += r;
          left -= static_cast<uint64_t>(r);
        }
        break;
      }
      if (n < 0) {
        if (errno == EINTR) continue;
        throw Error(to + ": copy from " + from + " failed: " + std::strerror(errno));
      }
      if (n == 0) throw Error(from + ": file shrank while being copied");
      left -= static_cast<uint64_t>(n);
    }
    out.commit();
  } catch (...) {
    ::close(in);
    throw;
  }
  ::close(in);
}

Cache::Cache(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  fs::create_directories(dir_ + "/objects", ec);
  fs::create_directories(dir_ + "/keys", ec);
  fs::create_directories(dir_ + "/targets", ec);
  if (ec) throw Error(dir_ + ": cannot create the cache directory: " + ec.message());
}

std::string Cache::object_path(const Digest& d) const {
  std::string h = d.hex();
  return dir_ + "/objects/" + h.substr(0, 2) + "/" + h.substr(2);
}

std::optional<CacheEntry> Cache::lookup(const std::string& key, std::string* why_not) const {
  std::ifstream in(dir_ + "/keys/" + key);
  if (!in) {
    if (why_not) *why_not = "not in the cache";
    return std::nullopt;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_entry(ss.str(), why_not);
}

const char* Cache::entry_header() { return kEntryHeader; }

std::optional<CacheEntry> Cache::parse_entry(const std::string& text, std::string* why_not) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != kEntryHeader) {
    if (why_not)
      *why_not =
          "its cache record was written by another qforge version ('" + line.substr(0, 40) + "'); rebuilding";
    return std::nullopt;
  }
  CacheEntry e;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string kind;
    ls >> kind;
    if (kind == "file") {
      CacheEntry::File f;
      std::string hex;
      ls >> hex >> f.size >> f.suffix;
      if (f.suffix == "-") f.suffix.clear();
      f.digest = parse_hex(hex);
      e.files.push_back(f);
    } else if (kind == "metric") {
      // The value is the last word (%.17g: "inf" and "nan" too); the name
      // is everything before it ("cosine[output 0]").
      const size_t sp = line.rfind(' ');
      if (sp == std::string::npos || sp <= 7) continue;
      e.log.metrics[line.substr(7, sp - 7)] = std::strtod(line.c_str() + sp + 1, nullptr);
    } else if (kind == "note") {
      std::string rest;
      std::getline(ls, rest);
      e.log.notes.push_back(rest.empty() ? rest : rest.substr(1));
    } else if (kind == "warning") {
      std::string rest;
      std::getline(ls, rest);
      e.log.warnings.push_back(rest.empty() ? rest : rest.substr(1));
    } else if (kind == "skip") {
      std::string rest;
      std::getline(ls, rest);
      if (!rest.empty()) rest = rest.substr(1);
      SkipRecord sk;
      size_t a = rest.find('\t'), b = a == std::string::npos ? a : rest.find('\t', a + 1);
      if (b != std::string::npos) {
        sk.pass = rest.substr(0, a);
        sk.reason = rest.substr(a + 1, b - a - 1);
        sk.what = rest.substr(b + 1);
        e.log.skipped.push_back(sk);
      }
    } else if (kind == "bpw") {
      ls >> e.bits_per_weight;
    } else if (kind == "seconds") {
      ls >> e.seconds;
    }
  }
  if (e.files.empty()) {
    if (why_not) *why_not = "its cache record lists no object";
    return std::nullopt;
  }
  return e;
}

std::string Cache::entry_text(const CacheEntry& entry) {
  std::ostringstream os;
  os << kEntryHeader << "\n";
  for (const auto& f : entry.files)
    os << "file " << f.digest.hex() << " " << f.size << " " << (f.suffix.empty() ? "-" : f.suffix) << "\n";
  char buf[64];
  for (const auto& [k, v] : entry.log.metrics) {
    std::snprintf(buf, sizeof buf, "%.17g", v);
    os << "metric " << one_line(k) << " " << buf << "\n";
  }
  for (const auto& n : entry.log.notes) os << "note " << one_line(n) << "\n";
  for (const auto& w : entry.log.warnings) os << "warning " << one_line(w) << "\n";
  for (const auto& s : entry.log.skipped)
    os << "skip " << one_line(s.pass) << "\t" << one_line(s.reason) << "\t" << one_line(s.what) << "\n";
  std::snprintf(buf, sizeof buf, "%.17g", entry.bits_per_weight);
  os << "bpw " << buf << "\n";
  std::snprintf(buf, sizeof buf, "%.6f", entry.seconds);
  os << "seconds " << buf << "\n";
  return os.str();
}

void Cache::record(const std::string& key, const CacheEntry& entry) {
  std::string s = entry_text(entry);
  AtomicFile out(dir_ + "/keys/" + key);
  out.write(s.data(), s.size());
  out.commit();
}

void Cache::store(const std::string& key, const std::string& artifact, const CacheEntry& entry) {
  for (const auto& f : entry.files) {
    std::string obj = object_path(f.digest);
    std::error_code ec;
    if (fs::exists(obj, ec)) continue;
    fs::create_directories(fs::path(obj).parent_path(), ec);
    copy_file_atomic(artifact + f.suffix, obj);
    ::chmod(obj.c_str(), 0444);
  }
  std::string s = entry_text(entry);
  AtomicFile out(dir_ + "/keys/" + key);
  out.write(s.data(), s.size());
  out.commit();
}

void Cache::store_bytes(const std::string& key, const std::string& bytes, CacheEntry entry) {
  const Digest d = hash_bytes(bytes.data(), bytes.size());
  const std::string obj = object_path(d);
  std::error_code ec;
  if (!fs::exists(obj, ec)) {
    fs::create_directories(fs::path(obj).parent_path(), ec);
    AtomicFile out(obj);
    out.write(bytes.data(), bytes.size());
    out.commit();
    ::chmod(obj.c_str(), 0444);
  }
  entry.files = {{"", d, bytes.size()}};
  std::string s = entry_text(entry);
  AtomicFile out(dir_ + "/keys/" + key);
  out.write(s.data(), s.size());
  out.commit();
}

std::string Cache::verify(const CacheEntry& entry) const {
  for (const auto& f : entry.files) {
    std::string obj = object_path(f.digest);
    std::error_code ec;
    if (!fs::exists(obj, ec)) return "cache object " + obj + " is missing";
    Digest d = hash_file(obj);
    if (d != f.digest) {
      ::unlink(obj.c_str());
      return "cache object " + obj + " is corrupt (its contents hash to " + d.hex() + "); removed it";
    }
  }
  return {};
}

std::string Cache::read_object(const CacheEntry::File& f) const {
  const std::string obj = object_path(f.digest);
  std::ifstream in(obj, std::ios::binary);
  if (!in) throw Error("cache object " + obj + " is missing");
  std::stringstream ss;
  ss << in.rdbuf();
  std::string bytes = ss.str();
  const Digest d = hash_bytes(bytes.data(), bytes.size());
  if (d != f.digest) {
    ::unlink(obj.c_str());
    throw Error("cache object " + obj + " is corrupt (its contents hash to " + d.hex() + "); removed it");
  }
  return bytes;
}

std::string Cache::restore(const CacheEntry& entry, const std::string& artifact) const {
  // Verify every object first, so that nothing is restored from a bad entry.
  if (std::string err = verify(entry); !err.empty()) return err;
  for (auto it = entry.files.rbegin(); it != entry.files.rend(); ++it)  // sidecars before the artifact
    copy_file_atomic(object_path(it->digest), artifact + it->suffix);
  return {};
}

std::optional<std::string> Cache::read_record(const std::string& name) const {
  std::ifstream in(dir_ + "/targets/" + hash_string(name).hex());
  if (!in) return std::nullopt;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Cache::write_record(const std::string& name, const std::string& text) {
  AtomicFile out(dir_ + "/targets/" + hash_string(name).hex());
  out.write(text.data(), text.size());
  out.commit();
}

}  // namespace qforge
