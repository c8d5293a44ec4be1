// qforge build --on slurm (docs/scale.md, "Slurm"). Stages:
//   plan      which targets must be built and which steps they share (a dry run)
//   write     the job scripts and the index file (task i -> target) under
//             <cache>/slurm/<plan id>/, kept for debugging with the jobs' logs
//   submit    the shared steps as one job (`qforge build --shared-only`), then
//             the targets as a job array depending on it (afterok)
//   wait      polling squeue, showing progress
//   gather    every target's result from the cache the tasks filled (a build
//             that may not build anything), the report with the job ids
#include "slurm_cmd.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "qforge/atomic_file.h"
#include "qforge/cache.h"
#include "qforge/hash.h"
#include "qforge/progress.h"
#include "qforge/status.h"

extern char** environ;

namespace fs = std::filesystem;

namespace qforge::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct Output {
  int status = -1;
  std::string out, err;
};

// Runs a program found on PATH with `args`, capturing its standard output and error.
Output run_program(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw Error(std::string("pipe: ") + std::strerror(errno));
  if (::pipe2(err, O_CLOEXEC) != 0) {
    ::close(out[0]);
    ::close(out[1]);
    throw Error(std::string("pipe: ") + std::strerror(errno));
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  pid_t pid = 0;
  const int rc = ::posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  ::close(err[1]);
  if (rc != 0) {
    ::close(out[0]);
    ::close(err[0]);
    throw Error(args[0] + ": cannot run it: " + std::strerror(rc));
  }
  Output o;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open = 2;
  char buf[8192];
  while (open > 0) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    for (int k = 0; k < 2; ++k) {
      if (fds[k].fd < 0 || !(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(fds[k].fd, buf, sizeof buf);
      if (n > 0) {
        (k ? o.err : o.out).append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[k].fd);
        fds[k].fd = -1;
        --open;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  o.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return o;
}

bool on_path(const std::string& prog) {
  const char* path = std::getenv("PATH");
  std::istringstream is(path ? path : "");
  std::string d;
  while (std::getline(is, d, ':'))
    if (!d.empty() && ::access((d + "/" + prog).c_str(), X_OK) == 0) return true;
  return false;
}

// `s` quoted for a POSIX shell.
std::string sq(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// The last `n` lines of a file, indented, or a note saying it cannot be read.
std::string tail_lines(const std::string& path, size_t n) {
  std::ifstream in(path);
  if (!in) return "    (" + path + " cannot be read)\n";
  std::deque<std::string> last;
  std::string l;
  while (std::getline(in, l)) {
    last.push_back(l);
    if (last.size() > n) last.pop_front();
  }
  if (last.empty()) return "    (" + path + " is empty)\n";
  std::string s;
  for (const auto& x : last) s += "    " + x + "\n";
  return s;
}

void write_file(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

// Every node `node` depends on, itself included.
std::set<int> ancestors(const Plan& plan, int node) {
  std::set<int> seen;
  std::vector<int> stack{node};
  while (!stack.empty()) {
    const int n = stack.back();
    stack.pop_back();
    if (n < 0 || !seen.insert(n).second) continue;
    for (int in : plan.nodes[n].inputs) stack.push_back(in);
  }
  return seen;
}

// Slurm job states after which a job does not run again.
bool finished(const std::string& state) {
  static const std::set<std::string> done = {"COMPLETED",     "FAILED",       "CANCELLED", "TIMEOUT",
                                             "NODE_FAIL",     "PREEMPTED",    "BOOT_FAIL", "DEADLINE",
                                             "OUT_OF_MEMORY", "SPECIAL_EXIT", "GONE"};
  return done.count(state) > 0;
}

volatile std::sig_atomic_t interrupted = 0;
extern "C" void on_interrupt(int) { interrupted = 1; }

struct Job {
  std::string id;  // "123", or "123_4" for an array task
  std::string state = "SUBMITTED", reason;
  int misses = 0;  // polls in a row that did not list it
};

}  // namespace

int build_on_slurm(const Plan& plan, StatCache& stats, const SlurmArgs& a) {
  const Manifest& m = *plan.manifest;
  const auto started = Clock::now();
  // ------------------------------------------------------------ plan
  BuildOptions dry;
  dry.dry_run = true;
  NullProgress quiet;
  const BuildResult before = run_build(plan, dry, stats, quiet);
  std::vector<size_t> todo;  // indices into plan.targets, in plan order: array task i builds todo[i]
  for (size_t k = 0; k < plan.targets.size(); ++k)
    if (before.targets[k].status == "planned") todo.push_back(k);
  std::set<size_t> shared;  // node indices the shared job builds (as --shared-only chooses them)
  for (size_t i = 0; i < plan.nodes.size(); ++i) {
    const PlanNode& n = plan.nodes[i];
    if (before.steps[i].status == "planned" && n.shared && n.store) shared.insert(i);
  }

  const std::string qforge_bin = fs::read_symlink("/proc/self/exe").string();
  const std::string manifest = fs::absolute(a.manifest).lexically_normal().string();
  Hasher h;
  h.field(manifest);
  for (size_t k : todo) h.field(plan.targets[k].decl.name).field(plan.nodes[plan.targets[k].emit].key);
  const std::string plan_id = h.digest().hex().substr(0, 16);
  const std::string dir = m.cache_dir + "/slurm/" + plan_id;

  // ------------------------------------------------------------ write
  std::string selection;  // the shared job plans the same targets as this build
  for (const auto& t : a.targets) selection += " --target " + sq(t);
  std::string common;  // the options every job's qforge build gets
  if (a.threads > 0)
    common += " -t " + std::to_string(a.threads);
  else
    common += " -t \"${SLURM_CPUS_ON_NODE:-1}\"";
  if (a.strict) common += " --strict";
  if (a.explain) common += " --explain";
  if (a.verbose) common += " -v";
  if (!a.remote_cache.empty()) common += " --remote-cache " + sq(a.remote_cache);
  std::string qforge = sq(qforge_bin);
  for (const auto& p : a.plugins) qforge += " --plugin " + sq(fs::absolute(p).string());

  const std::string shared_script =
      "#!/bin/sh\n"
      "# qforge build --on slurm, plan " +
      plan_id + ": the steps several targets share (" + std::to_string(shared.size()) +
      "), stored in the cache;\n# the target array (array.sh) starts when this job succeeds.\nset -e\ncd " +
      sq(m.dir) + "\nexec " + qforge + " build -f " + sq(manifest) + " --shared-only" + selection + common +
      "\n";
  std::string index;
  for (size_t k : todo) index += plan.targets[k].decl.name + "\n";
  const std::string array_script =
      "#!/bin/sh\n"
      "# qforge build --on slurm, plan " +
      plan_id +
      ": array task i builds the target on line i+1 of targets.txt,\n"
      "# against the cache the shared job filled.\nset -e\n"
      "target=$(sed -n \"$((SLURM_ARRAY_TASK_ID + 1))p\" " +
      sq(dir + "/targets.txt") +
      ")\n"
      "if [ -z \"$target\" ]; then\n"
      "  echo \"qforge: no target at index ${SLURM_ARRAY_TASK_ID:-(unset)} of \"" +
      sq(dir + "/targets.txt") +
      " >&2\n"
      "  exit 1\nfi\n"
      "echo \"qforge: task ${SLURM_ARRAY_TASK_ID} builds target '$target'\"\ncd " +
      sq(m.dir) + "\nexec " + qforge + " build -f " + sq(manifest) + " --target \"$target\"" + common + "\n";

  std::vector<std::string> extra;  // the user's options, after ours so that they win
  if (!a.partition.empty()) extra.push_back("--partition=" + a.partition);
  for (const auto& s : a.sbatch_args) extra.push_back(s);
  std::vector<std::string> shared_cmd = {"sbatch", "--parsable", "--job-name=qforge-shared",
                                         "--output=" + dir + "/shared-%j.out"};
  shared_cmd.insert(shared_cmd.end(), extra.begin(), extra.end());
  shared_cmd.push_back(dir + "/shared.sh");
  auto array_cmd = [&](const std::string& after) {
    std::vector<std::string> c = {"sbatch", "--parsable", "--job-name=qforge-targets",
                                  "--output=" + dir + "/target-%A_%a.out",
                                  "--array=0-" + std::to_string(todo.empty() ? 0 : todo.size() - 1)};
    if (!after.empty()) c.push_back("--dependency=afterok:" + after);
    c.insert(c.end(), extra.begin(), extra.end());
    c.push_back(dir + "/array.sh");
    return c;
  };
  auto show = [](const std::vector<std::string>& c) {
    std::string s;
    for (const auto& w : c)
      s += (s.empty() ? "" : " ") + (w.find_first_of(" '\"$*?;&|<>()") == std::string::npos ? w : sq(w));
    return s;
  };

  if (a.dry_run) {
    std::printf("slurm plan %s: %zu of %zu targets to build, %zu shared step(s)\n", plan_id.c_str(),
                todo.size(), plan.targets.size(), shared.size());
    if (todo.empty()) {
      std::printf("nothing to submit: every target is cached\n");
      return 0;
    }
    if (!shared.empty())
      std::printf("\n# %s/shared.sh\n%s\n# submitted with\n%s\n", dir.c_str(), shared_script.c_str(),
                  show(shared_cmd).c_str());
    std::printf(
        "\n# %s/targets.txt (array task i builds line i+1)\n%s\n# %s/array.sh\n%s\n# submitted with\n%s\n",
        dir.c_str(), index.c_str(), dir.c_str(), array_script.c_str(),
        show(array_cmd(shared.empty() ? "" : "<shared job id>")).c_str());
    return 0;
  }

  std::string shared_id, array_id;
  std::map<std::string, Job> jobs;  // by job id
  if (!todo.empty()) {
    for (const char* prog : {"sbatch", "squeue", "scancel"})
      if (!on_path(prog))
        throw Error(std::string("--on slurm needs Slurm's '") + prog +
                    "' on PATH, and it is not there; run on a host of the cluster (Debian: apt-get install "
                    "slurm-client) or build without --on");
    fs::create_directories(dir);
    write_file(dir + "/targets.txt", index);
    write_file(dir + "/array.sh", array_script);
    if (!shared.empty()) write_file(dir + "/shared.sh", shared_script);

    // ------------------------------------------------------------ submit
    auto submit = [&](const std::vector<std::string>& cmd) {
      Output o = run_program(cmd);
      const std::string id = trim(o.out.substr(0, o.out.find(';')));  // --parsable: "id" or "id;cluster"
      if (o.status != 0 || id.empty() || id.find_first_not_of("0123456789") != std::string::npos)
        throw Error("sbatch failed (exit " + std::to_string(o.status) + "): " + trim(o.err + o.out) +
                    "\n  command: " + show(cmd));
      if (!trim(o.err).empty()) std::fprintf(stderr, "note: sbatch: %s\n", trim(o.err).c_str());
      return id;
    };
    if (!shared.empty()) {
      shared_id = submit(shared_cmd);
      jobs[shared_id].id = shared_id;
      std::printf("slurm: submitted job %s: %zu shared step(s) (%s/shared.sh)\n", shared_id.c_str(),
                  shared.size(), dir.c_str());
    }
    try {
      array_id = submit(array_cmd(shared_id));
    } catch (const Error&) {
      if (!shared_id.empty()) run_program({"scancel", shared_id});
      throw;
    }
    for (size_t i = 0; i < todo.size(); ++i) {
      const std::string id = array_id + "_" + std::to_string(i);
      jobs[id].id = id;
    }
    std::printf("slurm: submitted job array %s: %zu target(s) (%s/array.sh, logs %s/target-%s_<i>.out)\n",
                array_id.c_str(), todo.size(), dir.c_str(), dir.c_str(), array_id.c_str());
    std::fflush(stdout);

    // ------------------------------------------------------------ wait
    auto old_int = std::signal(SIGINT, on_interrupt);
    auto old_term = std::signal(SIGTERM, on_interrupt);
    const bool tty = ::isatty(2) == 1;
    const auto t0 = Clock::now();
    std::string last_line;
    int failed_polls = 0;  // squeue failures in a row, since first_failure
    Clock::time_point first_failure;
    bool cancelled_dependents = false;
    const bool has_sacct = on_path("sacct");
    while (true) {
      if (interrupted) {
        run_program({"scancel", array_id});
        if (!shared_id.empty()) run_program({"scancel", shared_id});
        std::signal(SIGINT, old_int);
        std::signal(SIGTERM, old_term);
        if (tty) std::fputc('\n', stderr);
        throw Error("interrupted: cancelled Slurm job(s) " + (shared_id.empty() ? "" : shared_id + " and ") +
                    array_id);
      }
      std::string ids = array_id + (shared_id.empty() ? "" : "," + shared_id);
      Output o = run_program({"squeue", "-h", "-r", "--states=all", "-j", ids, "-o", "%i|%T|%r"});
      if (o.status != 0) {
        if (++failed_polls == 1) {
          first_failure = Clock::now();
          std::fprintf(stderr, "warning: squeue failed: %s (retrying)\n", trim(o.err).c_str());
        }
        if (Clock::now() - first_failure > std::chrono::minutes(2))
          throw Error("squeue has failed for two minutes: " + trim(o.err) + "; jobs " + ids +
                      " may still run (scancel them, or see their logs in " + dir + ")");
      } else {
        failed_polls = 0;
        std::set<std::string> listed;
        std::istringstream is(o.out);
        std::string l;
        while (std::getline(is, l)) {
          const auto p1 = l.find('|'), p2 = l.find('|', p1 == std::string::npos ? 0 : p1 + 1);
          if (p1 == std::string::npos || p2 == std::string::npos) continue;
          auto it = jobs.find(trim(l.substr(0, p1)));
          if (it == jobs.end()) continue;
          it->second.state = l.substr(p1 + 1, p2 - p1 - 1);
          it->second.reason = trim(l.substr(p2 + 1));
          it->second.misses = 0;
          listed.insert(it->first);
        }
        // A job no longer listed (its record expired) is over: sacct knows how
        // it ended when the cluster keeps accounting, else the cache says.
        for (auto& [id, j] : jobs) {
          if (listed.count(id) || finished(j.state) || ++j.misses < 3) continue;
          j.state = "GONE";
          if (!has_sacct) continue;
          Output acct = run_program({"sacct", "-n", "-P", "-X", "-j", id, "-o", "JobID,State"});
          std::istringstream as(acct.out);
          std::string al;
          while (acct.status == 0 && std::getline(as, al))
            if (al.rfind(id + "|", 0) == 0) {
              std::string state = trim(al.substr(id.size() + 1));
              state = state.substr(0, state.find(' '));  // "CANCELLED by 0"
              if (finished(state)) j.state = state;
            }
        }
      }
      // The shared job failed: the array would wait forever (DependencyNeverSatisfied).
      bool dependency_lost = !shared_id.empty() && finished(jobs[shared_id].state) &&
                             jobs[shared_id].state != "COMPLETED" && jobs[shared_id].state != "GONE";
      for (const auto& [id, j] : jobs)
        dependency_lost = dependency_lost || j.reason == "DependencyNeverSatisfied";
      if (dependency_lost && !cancelled_dependents) {
        run_program({"scancel", array_id});
        cancelled_dependents = true;
      }
      size_t done = 0, running = 0, pending = 0, failed = 0;
      for (size_t i = 0; i < todo.size(); ++i) {
        const std::string& s = jobs[array_id + "_" + std::to_string(i)].state;
        if (s == "COMPLETED" || s == "GONE")
          ++done;
        else if (finished(s))
          ++failed;
        else if (s == "RUNNING" || s == "COMPLETING")
          ++running;
        else
          ++pending;
      }
      std::string line = "slurm: ";
      if (!shared_id.empty()) line += "shared job " + shared_id + " " + jobs[shared_id].state + "; ";
      line += "targets: " + std::to_string(done) + "/" + std::to_string(todo.size()) + " done, " +
              std::to_string(running) + " running, " + std::to_string(pending) + " pending, " +
              std::to_string(failed) + " failed";
      const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
      if (tty) {
        std::fprintf(stderr, "\r%s (%.0fs)\033[K", line.c_str(), secs);
      } else if (line != last_line) {
        std::fprintf(stderr, "%s (%.0fs)\n", line.c_str(), secs);
      }
      last_line = line;
      bool all = true;
      for (const auto& [id, j] : jobs) all = all && finished(j.state);
      if (all) break;
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    if (tty) std::fputc('\n', stderr);
    std::signal(SIGINT, old_int);
    std::signal(SIGTERM, old_term);
  } else {
    std::printf("slurm: nothing to submit: every target is cached\n");
  }

  // ------------------------------------------------------------ gather
  BuildOptions g;
  g.cached_only = true;
  g.strict = a.strict;
  auto progress = make_console_progress(a.verbose || a.explain);
  BuildResult r = run_build(plan, g, stats, *progress);
  stats.save();
  Cache cache(m.cache_dir);
  std::map<std::string, size_t> task_of;
  for (size_t i = 0; i < todo.size(); ++i) task_of[plan.targets[todo[i]].decl.name] = i;
  const bool shared_failed =
      !shared_id.empty() && jobs[shared_id].state != "COMPLETED" && jobs[shared_id].state != "GONE";
  std::set<std::string> ok_targets;
  for (size_t k = 0; k < r.targets.size(); ++k) {
    TargetResult& t = r.targets[k];
    auto it = task_of.find(t.name);
    if (it == task_of.end()) continue;  // cached before the build: no job
    const std::string job = array_id + "_" + std::to_string(it->second);
    const Job& j = jobs[job];
    t.slurm_job = job;
    const std::string log = dir + "/target-" + job + ".out";
    if (t.status == "failed" || (j.state != "COMPLETED" && j.state != "GONE")) {
      if (t.status != "failed") {
        t.status = "failed";
        ++r.failed;
        --r.cached;
      }
      if (shared_failed && (j.state == "CANCELLED" || j.state == "PENDING"))
        t.error = "not built: the shared steps' job " + shared_id + " ended " + jobs[shared_id].state +
                  "; the last lines of " + dir + "/shared-" + shared_id + ".out:\n" +
                  tail_lines(dir + "/shared-" + shared_id + ".out", 15);
      else
        t.error = "Slurm task " + job + " ended " + j.state + "; the last lines of " + log + ":\n" +
                  tail_lines(log, 15);
      continue;
    }
    ok_targets.insert(t.name);
    if (t.status == "cached") {
      t.status = "built";
      --r.cached;
      ++r.built;
    }
    // What the task's steps took, as their cache entries recorded it (a step
    // the cache does not keep, such as an import, is not counted).
    t.seconds = 0;
    for (int n : ancestors(plan, plan.targets[todo[it->second]].emit))
      if (before.steps[n].status == "planned" && plan.nodes[n].store)
        if (auto e = cache.lookup(plan.nodes[n].key)) t.seconds += e->seconds;
  }
  for (size_t i = 0; i < r.steps.size() && i < plan.nodes.size(); ++i) {
    if (before.steps[i].status != "planned") continue;
    const PlanNode& n = plan.nodes[i];
    StepResult& s = r.steps[i];
    if (shared.count(i))
      s.slurm_job = shared_id;
    else if (n.targets.size() == 1 && task_of.count(n.targets.front()))
      s.slurm_job = array_id + "_" + std::to_string(task_of[n.targets.front()]);
    else
      s.slurm_job = array_id;
    if (n.store) {
      auto e = cache.lookup(n.key);
      s.status = e ? "built" : "failed";
      s.seconds = e ? e->seconds : 0;
    } else {
      bool any = false;
      for (const auto& t : n.targets) any = any || ok_targets.count(t);
      s.status = any ? "built" : "failed";
    }
  }
  r.seconds = std::chrono::duration<double>(Clock::now() - started).count();  // submit, wait and gather
  write_reports(r, m);
  std::fputs(report_table(r, m.dir).c_str(), stdout);
  std::printf("report: %s/report.json, %s/report.md, %s/report.html\n", m.output_dir.c_str(),
              m.output_dir.c_str(), m.output_dir.c_str());
  return r.ok() && !shared_failed ? 0 : 1;
}

}  // namespace qforge::cli
