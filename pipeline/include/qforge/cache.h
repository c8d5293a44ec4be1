// The content-addressed cache of build results.
//
// Layout under the cache directory:
//   objects/ab/cdef...   file contents, named by their XXH3-128 digest (read-only)
//   keys/<node key>      a small text record: which objects make a node's
//                        result, plus its metrics (format documented in cache.cc)
//   stat-cache           path/size/mtime/inode -> digest (hash.h)
//   targets/<name>       what produced each target last time (for --explain)
// Every object is verified by hash when read; a corrupt entry is reported and
// rebuilt, never used. Everything is written through AtomicFile.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "qforge/hash.h"

namespace qforge {

// What a step left alone, attributed to its pass.
struct SkipRecord {
  std::string pass, reason, what;
};

// What the steps behind a result said: metrics, notes, warnings, skips, in
// step order (a cached result carries what its steps said when they ran, so
// a cached build reports the same as the build that made it).
struct StepLog {
  std::map<std::string, double> metrics;
  std::vector<std::string> notes;
  std::vector<std::string> warnings;
  std::vector<SkipRecord> skipped;
  void merge(const StepLog& other);  // appends what `other` has that this lacks
};

struct CacheEntry {
  struct File {
    std::string suffix;  // "" for the artifact itself, ".data" for a sidecar ...
    Digest digest;
    uint64_t size = 0;
  };
  std::vector<File> files;
  StepLog log;
  double bits_per_weight = 0;
  double seconds = 0;  // how long the original build took
};

class Cache {
 public:
  explicit Cache(std::string dir);
  const std::string& dir() const { return dir_; }
  // The entry recorded under `key`, if any. `why_not`, when given, says why
  // there is none (no entry, or one written by another qforge version).
  std::optional<CacheEntry> lookup(const std::string& key, std::string* why_not = nullptr) const;
  // Stores the files (already written at `artifact` + suffix) as objects and
  // records the entry under `key`.
  void store(const std::string& key, const std::string& artifact, const CacheEntry& entry);
  // Stores `bytes` as the entry's one object (a Table) and records the entry.
  void store_bytes(const std::string& key, const std::string& bytes, CacheEntry entry);
  // Checks every object of `entry` against its digest; "" when all are
  // intact, else what is wrong (a corrupt object is deleted).
  std::string verify(const CacheEntry& entry) const;
  // The bytes of an object, verified; throws qforge::Error when missing or corrupt.
  std::string read_object(const CacheEntry::File& f) const;
  // Copies the entry's objects to `artifact` + suffix atomically, verifying
  // each object's digest. Returns an error message (empty on success); a
  // corrupt object is deleted.
  std::string restore(const CacheEntry& entry, const std::string& artifact) const;
  std::string object_path(const Digest& d) const;
  // Records `entry` under `key`; its objects must already be in the store
  // (a remote cache restores objects first, then the record).
  void record(const std::string& key, const CacheEntry& entry);

  // The text of a record (keys/<key>) and its parse; nullopt, with `why_not`
  // set, when the text is not a record this version reads.
  static std::string entry_text(const CacheEntry& entry);
  static std::optional<CacheEntry> parse_entry(const std::string& text, std::string* why_not = nullptr);
  // The first line of every record this version writes.
  static const char* entry_header();

  // Free-form per-target records for --explain.
  std::optional<std::string> read_record(const std::string& name) const;
  void write_record(const std::string& name, const std::string& text);

 private:
  std::string dir_;
};

// Copies a file (copy_file_range) through AtomicFile. Throws qforge::Error.
void copy_file_atomic(const std::string& from, const std::string& to);

}  // namespace qforge
