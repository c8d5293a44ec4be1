#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <mutex>

#include "qforge/progress.h"

namespace qforge {
namespace {

class ConsoleProgress : public Progress {
 public:
  explicit ConsoleProgress(bool verbose) : verbose_(verbose), tty_(::isatty(2) == 1) {}

  void begin(const std::string& label, uint64_t total, const char* unit) override {
    std::lock_guard<std::mutex> lk(mu_);
    label_ = label;
    total_ = total;
    done_ = 0;
    unit_ = unit ? unit : "";
    start_ = Clock::now();
    last_ = start_;
    next_pct_ = 10;
    if (!tty_) std::fprintf(stderr, "%s: 0/%llu %s\n", label_.c_str(), (unsigned long long)total_, unit_.c_str());
    else draw();
  }

  void advance(uint64_t n) override {
    std::lock_guard<std::mutex> lk(mu_);
    done_ += n;
    auto now = Clock::now();
    if (tty_) {
      if (now - last_ > std::chrono::milliseconds(100) || done_ == total_) {
        last_ = now;
        draw();
      }
    } else if (total_ && done_ * 100 >= next_pct_ * total_ && next_pct_ < 100) {
      std::fprintf(stderr, "%s: %llu/%llu %s (%u%%)\n", label_.c_str(), (unsigned long long)done_,
                   (unsigned long long)total_, unit_.c_str(), next_pct_);
      while (next_pct_ <= 100 && done_ * 100 >= next_pct_ * total_) next_pct_ += 10;
    }
  }

  void end() override {
    std::lock_guard<std::mutex> lk(mu_);
    double s = std::chrono::duration<double>(Clock::now() - start_).count();
    if (tty_) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "%s: %llu/%llu %s in %.2fs\n", label_.c_str(), (unsigned long long)done_,
                 (unsigned long long)total_, unit_.c_str(), s);
    total_ = 0;
  }

  void info(const std::string& line) override {
    if (!verbose_) return;
    std::lock_guard<std::mutex> lk(mu_);
    if (tty_ && total_) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "%s\n", line.c_str());
    if (tty_ && total_) draw();
  }

  void warn(const std::string& line) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (tty_ && total_) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "%s\n", line.c_str());
    if (tty_ && total_) draw();
  }

 private:
  using Clock = std::chrono::steady_clock;
  void draw() {
    const int width = 30;
    double frac = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 0;
    int fill = static_cast<int>(frac * width);
    double el = std::chrono::duration<double>(Clock::now() - start_).count();
    double eta = frac > 0 ? el / frac - el : 0;
    std::string bar(static_cast<size_t>(fill), '#');
    bar += std::string(static_cast<size_t>(width - fill), '.');
    std::fprintf(stderr, "\r\033[K%s [%s] %llu/%llu %s  ETA %.0fs", label_.c_str(), bar.c_str(),
                 (unsigned long long)done_, (unsigned long long)total_, unit_.c_str(), eta);
    std::fflush(stderr);
  }

  std::mutex mu_;
  bool verbose_, tty_;
  std::string label_, unit_;
  uint64_t total_ = 0, done_ = 0;
  unsigned next_pct_ = 10;
  Clock::time_point start_, last_;
};

}  // namespace

std::unique_ptr<Progress> make_console_progress(bool verbose) { return std::make_unique<ConsoleProgress>(verbose); }

}  // namespace qforge
