#include "qforge/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "qforge/status.h"

namespace qforge {

AtomicFile::AtomicFile(std::string final_path) : final_path_(std::move(final_path)) {
  auto slash = final_path_.rfind('/');
  std::string dir = slash == std::string::npos ? "" : final_path_.substr(0, slash + 1);
  std::string base = slash == std::string::npos ? final_path_ : final_path_.substr(slash + 1);
  // Hidden, unique, in the same directory (so rename is atomic).
  std::string tmpl = dir + "." + base + ".tmp-" + std::to_string(::getpid()) + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  fd_ = ::mkostemp(buf.data(), O_CLOEXEC);
  if (fd_ < 0)
    throw Error(final_path_ + ": cannot create a temporary file beside it: " + std::strerror(errno) +
                " (check that the directory exists and is writable)");
  temp_path_ = buf.data();
  ::fchmod(fd_, 0644);
}

AtomicFile::~AtomicFile() {
  if (!done_) discard();
}

void AtomicFile::write(const void* data, size_t n) { pwrite(data, n, size_); }

void AtomicFile::pwrite(const void* data, size_t n, uint64_t at) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t off = at;
  while (n > 0) {
    ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(final_path_ + ": write failed at byte " + std::to_string(off) + ": " +
                  std::strerror(errno));
    }
    p += w;
    off += static_cast<uint64_t>(w);
    n -= static_cast<size_t>(w);
  }
  if (off > size_) size_ = off;
}

void AtomicFile::commit() {
  if (done_) return;
  if (::close(fd_) != 0) {
    fd_ = -1;
    discard();
    throw Error(final_path_ + ": close failed: " + std::strerror(errno));
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
    int e = errno;
    discard();
    throw Error(final_path_ + ": cannot rename the finished file into place: " + std::strerror(e));
  }
  done_ = true;
}

void AtomicFile::discard() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
  done_ = true;
}

size_t sweep_stale_temps(const std::string& dir) {
  namespace fs = std::filesystem;
  size_t removed = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    auto at = name.rfind(".tmp-");
    if (name.empty() || name[0] != '.' || at == std::string::npos) continue;
    // .<base>.tmp-<pid>-XXXXXX
    std::string rest = name.substr(at + 5);
    auto dash = rest.find('-');
    if (dash == std::string::npos || rest.size() - dash - 1 != 6) continue;
    char* end = nullptr;
    long pid = std::strtol(rest.substr(0, dash).c_str(), &end, 10);
    if (!end || *end || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;  // still running
    if (fs::remove(e.path(), ec)) ++removed;
  }
  return removed;
}

}  // namespace qforge
