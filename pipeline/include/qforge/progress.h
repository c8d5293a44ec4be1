// Progress and log lines from passes and formats. On a terminal the host draws
// a bar with counts and an ETA; otherwise it prints plain lines.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace qforge {

class Progress {
 public:
  virtual ~Progress() = default;
  virtual void begin(const std::string& label, uint64_t total, const char* unit) = 0;
  virtual void advance(uint64_t n) = 0;  // thread-safe
  virtual void end() = 0;
  virtual void info(const std::string& line) = 0;
  virtual void warn(const std::string& line) = 0;
  // A reporter for one task running beside others (each build step gets one),
  // so that concurrent steps keep their own counts. Null: use this one.
  virtual std::unique_ptr<Progress> task() { return nullptr; }
};

// Does nothing; for tests and library use.
class NullProgress : public Progress {
 public:
  void begin(const std::string&, uint64_t, const char*) override {}
  void advance(uint64_t) override {}
  void end() override {}
  void info(const std::string&) override {}
  void warn(const std::string&) override {}
};

}  // namespace qforge

#include <memory>

namespace qforge {
// Progress on stderr: a redrawn bar with counts and an ETA on a terminal,
// plain lines otherwise. `verbose` also prints per-step info lines.
std::unique_ptr<Progress> make_console_progress(bool verbose);
}  // namespace qforge
