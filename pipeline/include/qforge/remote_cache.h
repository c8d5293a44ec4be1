// A remote cache shared between machines, over bazel-remote's HTTP cache
// protocol: GET/PUT/HEAD on <url>/cas/<sha256 of the content> for objects and
// <url>/ac/<64 hex> for a node's record (docs/scale.md, "Remote cache", has
// the record format, the servers it works with and the security notes).
//
// The local cache stays the only place a build reads results from: a remote
// hit downloads the objects the local cache lacks into it (each verified by
// its sha256 and its XXH3-128 before it is renamed into place), then writes
// the local record, and the build goes on as for a local hit. Uploads send
// the objects first (HEAD, then PUT only what the server lacks) and the
// record last, so a record never names an object the server does not have.
// Objects are streamed from and to files, never held whole in memory.
#pragma once

#include <cstdint>
#include <mutex>
#include <set>
#include <string>

#include "qforge/cache.h"

namespace qforge {

struct RemoteCacheConfig {
  std::string url;    // http:// or https:// base URL
  std::string token;  // bearer token, "" for none; never printed
  long connect_timeout_s = 10;
  long stall_timeout_s = 30;  // a transfer slower than 1 byte/s this long fails
};

class RemoteCache {
 public:
  // Throws qforge::Error when the URL is not http(s)://.
  explicit RemoteCache(RemoteCacheConfig cfg);
  RemoteCache(const RemoteCache&) = delete;
  RemoteCache& operator=(const RemoteCache&) = delete;

  // The URL as messages show it (user:password@ removed).
  const std::string& display_url() const { return shown_; }
  // The action-cache key of a node key: the sha256 of a tag and the key, as
  // 64 hex digits (the shape bazel-remote requires).
  static std::string ac_key(const std::string& node_key);

  enum class Outcome {
    Hit,      // the local cache now has the entry
    Miss,     // the server has no record for the key
    Corrupt,  // the record or an object was bad (not used); the server is fine
    Down,     // the server could not be reached or failed (5xx, 401, a cut transfer)
  };
  struct Result {
    Outcome outcome = Outcome::Miss;
    std::string message;  // for Corrupt and Down: what happened, naming the URL and key
    size_t objects = 0;   // fetch: downloaded; upload: sent (not already there)
    uint64_t bytes = 0;
  };

  // Looks `key` up and, on a hit, restores its objects and record into `local`.
  Result fetch(const std::string& key, Cache& local);
  // Whether the server has a record for `key` (HEAD; for dry runs).
  Result has(const std::string& key);
  // Uploads the local entry `key`: its objects (those the server has are
  // skipped, except ones this build found corrupt there: those are replaced),
  // then its record.
  Result upload(const std::string& key, const Cache& local);

 private:
  struct Transfer;
  RemoteCacheConfig cfg_;
  std::string base_;   // without a trailing slash
  std::string shown_;  // base_ without user information
  std::mutex mu_;
  std::set<std::string> bad_;  // sha256s of objects found corrupt or truncated on the server
};

}  // namespace qforge
