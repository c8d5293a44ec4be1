#include "qforge/hash.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "qforge/atomic_file.h"
#include "qforge/status.h"

namespace qforge {

std::string Digest::hex() const {
  char b[33];
  std::snprintf(b, sizeof b, "%016llx%016llx", static_cast<unsigned long long>(hi),
                static_cast<unsigned long long>(lo));
  return b;
}

Digest hash_bytes(const void* data, size_t n) {
  XXH128_hash_t h = XXH3_128bits(data, n);
  return {h.high64, h.low64};
}

Digest hash_string(const std::string& s) { return hash_bytes(s.data(), s.size()); }

Hasher::Hasher() : state_(XXH3_createState()) { XXH3_128bits_reset(static_cast<XXH3_state_t*>(state_)); }
Hasher::~Hasher() { XXH3_freeState(static_cast<XXH3_state_t*>(state_)); }

Hasher& Hasher::field(const std::string& s) {
  uint64_t n = s.size();
  raw(&n, sizeof n);
  return raw(s.data(), s.size());
}

Hasher& Hasher::raw(const void* data, size_t n) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data, n);
  return *this;
}

Digest Hasher::digest() const {
  XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
  return {h.high64, h.low64};
}

Digest hash_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  Hasher h;
  std::vector<char> buf(1 << 20);
  uint64_t off = 0;
  for (;;) {
    ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      throw Error(path + ": read failed: " + std::strerror(e));
    }
    if (r == 0) break;
    h.raw(buf.data(), static_cast<size_t>(r));
    // Don't keep a hashed model in the page cache at our expense.
    ::posix_fadvise(fd, static_cast<off_t>(off), r, POSIX_FADV_DONTNEED);
    off += static_cast<uint64_t>(r);
  }
  ::close(fd);
  return h.digest();
}

namespace {
constexpr const char* kStatHeader = "qforge-stat-cache 1";
}

StatCache::StatCache(std::string path) : path_(std::move(path)) {
  std::ifstream in(path_);
  if (!in) return;
  std::string line;
  if (!std::getline(in, line)) return;
  if (line != kStatHeader) {
    note = path_ + ": unknown stat cache version ('" + line + "'); starting over";
    dirty_ = true;
    return;
  }
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    Entry e{};
    std::string hex;
    ls >> e.size >> e.mtime_ns >> e.ctime_ns >> e.ino >> hex;
    std::string file;
    std::getline(ls, file);
    if (!ls.eof() && ls.fail()) continue;
    if (file.size() < 2 || hex.size() != 32) continue;
    file = file.substr(1);
    e.digest.hi = std::stoull(hex.substr(0, 16), nullptr, 16);
    e.digest.lo = std::stoull(hex.substr(16), nullptr, 16);
    entries_[file] = e;
  }
}

Digest StatCache::digest(const std::string& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) throw Error(file + ": cannot stat: " + std::strerror(errno));
  uint64_t mt = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000ull + st.st_mtim.tv_nsec;
  uint64_t ct = static_cast<uint64_t>(st.st_ctim.tv_sec) * 1000000000ull + st.st_ctim.tv_nsec;
  if (path_.empty()) {
    // No cache to serve (--no-cache, `qforge quantize`): keys only need to
    // tell this build's inputs apart, so don't read the file.
    std::string id = file + "\n" + std::to_string(st.st_size) + " " + std::to_string(mt) + " " +
                     std::to_string(ct) + " " + std::to_string(st.st_ino);
    return hash_string(id);
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto it = entries_.find(file);
    if (it != entries_.end() && it->second.size == static_cast<uint64_t>(st.st_size) &&
        it->second.mtime_ns == mt && it->second.ctime_ns == ct && it->second.ino == st.st_ino) {
      ++hits;
      return it->second.digest;
    }
  }
  Digest d = hash_file(file);
  std::lock_guard<std::mutex> lk(mu_);
  ++misses;
  // A file modified within the same clock tick as it was hashed could change
  // again unseen (git's "racy" case): don't remember it.
  struct timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  uint64_t now_ns = static_cast<uint64_t>(now.tv_sec) * 1000000000ull + now.tv_nsec;
  if (now_ns > mt + 2000000000ull) {
    entries_[file] = {static_cast<uint64_t>(st.st_size), mt, static_cast<uint64_t>(st.st_ino), ct, d};
    dirty_ = true;
  }
  return d;
}

void StatCache::save() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!dirty_ || path_.empty()) return;
  std::ostringstream os;
  os << kStatHeader << "\n";
  for (const auto& [file, e] : entries_)
    os << e.size << " " << e.mtime_ns << " " << e.ctime_ns << " " << e.ino << " " << e.digest.hex() << " "
       << file << "\n";
  std::string s = os.str();
  AtomicFile f(path_);
  f.write(s.data(), s.size());
  f.commit();
  dirty_ = false;
}

}  // namespace qforge
