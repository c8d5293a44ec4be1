// Status values: how errors cross the plugin boundary (never as exceptions).
#pragma once

#include <exception>
#include <string>
#include <utility>

namespace qforge {

// An input or build error. Its message already names the file, the position
// (line:col, byte offset or tensor name) and what to do.
class Error : public std::exception {
 public:
  explicit Error(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

struct Status {
  bool ok = true;
  std::string message;

  static Status success() { return {}; }
  static Status failure(std::string m) { return {false, std::move(m)}; }
  explicit operator bool() const { return ok; }
  // Throws qforge::Error when not ok (for use on the host side).
  void check() const {
    if (!ok) throw Error(message);
  }
};

// Runs `fn` and turns any exception into a Status. Plugins wrap every entry
// point in this so that no exception crosses the library boundary.
template <class Fn>
Status guard(Fn&& fn) noexcept {
  try {
    fn();
    return Status::success();
  } catch (const std::exception& e) {
    return Status::failure(e.what());
  } catch (...) {
    return Status::failure("unknown error (non-standard exception)");
  }
}

}  // namespace qforge
