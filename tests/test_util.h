// Small helpers shared by tests that drive external programs.
#pragma once

#include <cstdio>
#include <string>

namespace qforge::test {

// Runs `cmd` through the shell; returns its standard output and sets `status`
// (as pclose returns it; -1 when the command could not be started).
inline std::string run_capture(const std::string& cmd, int& status) {
  std::string out;
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) {
    status = -1;
    return out;
  }
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  status = ::pclose(p);
  return out;
}

// `s` quoted for a POSIX shell.
inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

}  // namespace qforge::test
