// Console progress. Every build step reports through its own task; when
// stderr is not a terminal the console prints plain lines (every 10% of a
// task that has run for more than 2 s, and its end), and on a terminal redraws one status line with a bar,
// counts and an ETA for the most recently advanced task.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>

#include "qforge/progress.h"

namespace qforge {
namespace {

using Clock = std::chrono::steady_clock;

struct Console {
  std::mutex mu;
  bool tty = ::isatty(2) == 1;
  bool verbose = false;
  bool status_shown = false;

  void line(const std::string& text) {  // mu held
    if (status_shown) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "%s\n", text.c_str());
    status_shown = false;
  }
  void status(const std::string& text) {  // mu held; terminals only
    std::fprintf(stderr, "\r\033[K%s", text.c_str());
    std::fflush(stderr);
    status_shown = true;
  }
};

class Task : public Progress {
 public:
  explicit Task(std::shared_ptr<Console> c) : c_(std::move(c)) {}

  void begin(const std::string& label, uint64_t total, const char* unit) override {
    std::lock_guard<std::mutex> lk(c_->mu);
    label_ = label;
    unit_ = unit ? unit : "";
    total_ = total;
    done_ = 0;
    next_pct_ = 10;
    active_ = true;
    start_ = last_draw_ = Clock::now();
    printed_ = false;
    if (c_->tty) draw();
  }

  void advance(uint64_t n) override {
    std::lock_guard<std::mutex> lk(c_->mu);
    if (!active_) return;  // late work (e.g. a lazy tensor) after end(): not this task's any more
    done_ += n;
    if (c_->tty) {
      auto now = Clock::now();
      if (now - last_draw_ > std::chrono::milliseconds(100) || done_ >= total_) {
        last_draw_ = now;
        draw();
      }
    } else if (total_ && done_ < total_ && done_ * 100 >= next_pct_ * total_ &&
               Clock::now() - start_ > std::chrono::seconds(2)) {
      // Plain lines only for tasks long enough to need them.
      printed_ = true;
      unsigned pct = static_cast<unsigned>(done_ * 100 / total_);
      c_->line(label_ + ": " + std::to_string(done_) + "/" + std::to_string(total_) + " " + unit_ + " (" +
               std::to_string(pct) + "%)");
      next_pct_ = (pct / 10 + 1) * 10;
    }
  }

  void end() override {
    std::lock_guard<std::mutex> lk(c_->mu);
    if (!active_) return;
    active_ = false;
    if (!c_->tty && !printed_ && !c_->verbose) return;
    char secs[32];
    std::snprintf(secs, sizeof secs, "%.2fs", std::chrono::duration<double>(Clock::now() - start_).count());
    c_->line(label_ + ": " + std::to_string(done_) + "/" + std::to_string(total_) + " " + unit_ + " in " +
             secs);
  }

  void info(const std::string& text) override {
    if (!c_->verbose) return;
    std::lock_guard<std::mutex> lk(c_->mu);
    c_->line(text);
  }

  void warn(const std::string& text) override {
    std::lock_guard<std::mutex> lk(c_->mu);
    c_->line(text);
  }

  std::unique_ptr<Progress> task() override { return std::make_unique<Task>(c_); }

 private:
  void draw() {  // mu held
    const int width = 30;
    double frac = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 0;
    if (frac > 1) frac = 1;
    int fill = static_cast<int>(frac * width);
    double el = std::chrono::duration<double>(Clock::now() - start_).count();
    char eta[48] = "";
    if (frac > 0 && frac < 1) std::snprintf(eta, sizeof eta, "  ETA %.0fs", el / frac - el);
    c_->status(label_ + " [" + std::string(static_cast<size_t>(fill), '#') +
               std::string(static_cast<size_t>(width - fill), '.') + "] " + std::to_string(done_) + "/" +
               std::to_string(total_) + " " + unit_ + eta);
  }

  std::shared_ptr<Console> c_;
  std::string label_, unit_;
  uint64_t total_ = 0, done_ = 0;
  unsigned next_pct_ = 10;
  bool active_ = false;
  bool printed_ = false;  // a plain line was printed for this task
  Clock::time_point start_, last_draw_;
};

}  // namespace

std::unique_ptr<Progress> make_console_progress(bool verbose) {
  auto c = std::make_shared<Console>();
  c->verbose = verbose;
  return std::make_unique<Task>(c);
}

}  // namespace qforge
