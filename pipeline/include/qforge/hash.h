// Content hashing (XXH3-128) and a stat cache so that unchanged large inputs
// are not re-hashed (path, size, mtime, inode -> digest, as git's index does).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace qforge {

struct Digest {
  uint64_t hi = 0, lo = 0;
  std::string hex() const;  // 32 hex digits
  bool operator==(const Digest& o) const { return hi == o.hi && lo == o.lo; }
  bool operator!=(const Digest& o) const { return !(*this == o); }
};

Digest hash_bytes(const void* data, size_t n);
Digest hash_string(const std::string& s);

// Incremental hashing of a sequence of fields (each length-prefixed, so
// ("ab","c") and ("a","bc") differ).
class Hasher {
 public:
  Hasher();
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  Hasher& field(const std::string& s);
  Hasher& raw(const void* data, size_t n);
  Digest digest() const;

 private:
  void* state_;
};

// Hashes a whole file by streaming it. Throws qforge::Error naming the file.
Digest hash_file(const std::string& path);

class StatCache {
 public:
  // Loads `path` if it exists; a file of another version is ignored, and
  // `note` says so. An empty path means no cache is kept: digest() then
  // identifies a file by its path and stat without reading it.
  explicit StatCache(std::string path);
  // The digest of a file, re-hashed only when its stat changed.
  Digest digest(const std::string& file);
  void save();       // atomically
  std::string note;  // what happened on load ("" when nothing to say)
  size_t hits = 0, misses = 0;

 private:
  struct Entry {
    uint64_t size, mtime_ns, ino, ctime_ns;
    Digest digest;
  };
  std::string path_;
  std::map<std::string, Entry> entries_;
  std::mutex mu_;
  bool dirty_ = false;
};

}  // namespace qforge
