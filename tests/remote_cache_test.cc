// The remote cache (docs/scale.md, "Remote cache") against a real server: nginx
// from Debian with WebDAV PUT, started by each test on 127.0.0.1 with its
// configuration, root, logs and temporary files in the test's directory, and
// stopped by it. Builds run the qforge binary in separate checkouts, each with
// its own local cache, on a small generated llama model.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "qforge/remote_cache.h"
#include "qforge/status.h"
#include "test_util.h"

namespace fs = std::filesystem;
using qforge::test::shell_quote;
using qforge::test::slurp;
using qforge::test::TempDir;

namespace {

const char* kNginx = "/usr/sbin/nginx";
// The models: the quickstart's llama (F32, 2 layers, embd 256), and a larger
// one for the download cut in the middle.
const char* kModelArgs = "--layers 2 --embd 256 --ff 768 --vocab 512 --heads 4 --heads-kv 2";

std::string bin_dir() { return fs::path(QFORGE_BIN).parent_path().string(); }

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool port_open(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// nginx serving `dir`/root with WebDAV PUT on a free loopback port, one
// process (master_process off), in the foreground; stopped by the destructor.
class Nginx {
 public:
  struct Options {
    std::string limit_rate;  // e.g. "200k": responses this slow
    std::string token;       // requests must carry "Authorization: Bearer <token>"
  };
  Nginx(const fs::path& dir, const Options& o) : dir_(dir), root_(dir / "root") {
    fs::create_directories(root_);
    fs::create_directories(dir / "tmp");
    port_ = free_port();
    const std::string d = dir.string();
    std::ofstream conf(dir / "nginx.conf");
    conf << "daemon off;\nmaster_process off;\nworker_processes 1;\npid " << d << "/nginx.pid;\n"
         << "error_log " << d << "/error.log;\nevents { worker_connections 64; }\nhttp {\n"
         << "  access_log " << d << "/access.log;\n"
         << "  client_body_temp_path " << d << "/tmp/body;\n  proxy_temp_path " << d << "/tmp/proxy;\n"
         << "  fastcgi_temp_path " << d << "/tmp/fastcgi;\n  uwsgi_temp_path " << d << "/tmp/uwsgi;\n"
         << "  scgi_temp_path " << d << "/tmp/scgi;\n"
         << "  server {\n    listen 127.0.0.1:" << port_ << ";\n    root " << root_.string() << ";\n"
         << "    client_max_body_size 0;\n    location / {\n"
         << "      dav_methods PUT;\n      create_full_put_path on;\n      dav_access user:rw;\n";
    if (!o.limit_rate.empty()) conf << "      limit_rate " << o.limit_rate << ";\n";
    if (!o.token.empty())
      conf << "      if ($http_authorization != \"Bearer " << o.token << "\") { return 401; }\n";
    conf << "    }\n  }\n}\n";
    conf.close();
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string err = d + "/error.log", conf_path = d + "/nginx.conf";
      ::execl(kNginx, kNginx, "-e", err.c_str(), "-p", d.c_str(), "-c", conf_path.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 100 && !port_open(port_); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    INFO(read_text(dir / "error.log"));
    REQUIRE(port_open(port_));
  }
  ~Nginx() { stop(SIGTERM); }
  Nginx(const Nginx&) = delete;
  Nginx& operator=(const Nginx&) = delete;
  void stop(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const fs::path& root() const { return root_; }

 private:
  fs::path dir_, root_;
  int port_ = 0;
  pid_t pid_ = -1;
};

bool have_nginx() {
  if (::access(kNginx, X_OK) == 0) return true;
  WARN("nginx is not installed (Debian's nginx-light): the remote cache tests did not run");
  return false;
}

struct Run {
  int rc;
  std::string out, err;
};

// Runs `cmd` in `dir` with `env` ("NAME=value ..." prefixed), capturing both streams.
Run run(const std::string& cmd, const fs::path& dir, const std::string& env = "") {
  const fs::path o = dir / ".run-out", e = dir / ".run-err";
  const std::string full = "cd " + shell_quote(dir.string()) + " && env -u QFORGE_REMOTE_CACHE -u " +
                           "QFORGE_REMOTE_CACHE_TOKEN " + env + " " + cmd + " >" + shell_quote(o.string()) +
                           " 2>" + shell_quote(e.string());
  const int st = std::system(full.c_str());
  Run r{WIFEXITED(st) ? WEXITSTATUS(st) : 128, read_text(o), read_text(e)};
  fs::remove(o);
  fs::remove(e);
  return r;
}

std::string qforge_cmd() { return shell_quote(QFORGE_BIN); }

const char* kTargets =
    "[[targets]]\nname = \"llm-{type}\"\nmodel = \"llm\"\nmatrix = { type = [\"Q8_0\", \"Q4_0\"] }\n"
    "pipeline = [ { pass = \"quantize-gguf\", type = \"{type}\" } ]\n"
    "[[targets]]\nname = \"llm-fit\"\nmodel = \"llm\"\n"
    "pipeline = [ { pass = \"select-precision\", budget = \"Q4_K_M\" }, { pass = \"quantize-gguf\", type = "
    "\"Q4_K_M\" } ]\n";

// A checkout: the model, a manifest (`build_extra` goes into [build]), its own cache.
fs::path checkout(const TempDir& t, const std::string& name, const std::string& build_extra = "",
                  const std::string& model_args = kModelArgs, const std::string& targets = kTargets) {
  const fs::path d = t.path / name;
  fs::create_directories(d / "models");
  REQUIRE(run(shell_quote(bin_dir() + "/make_tiny_llama") + " models/tiny.gguf " + model_args, d).rc == 0);
  std::ofstream(d / "qforge.toml") << "[build]\noutput = \"dist\"\ncache = \"cache\"\n"
                                   << build_extra << "\n[models.llm]\npath = \"models/tiny.gguf\"\n"
                                   << targets;
  return d;
}

std::vector<std::string> artifacts(const fs::path& d) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(d / "dist"))
    if (e.path().extension() == ".gguf") out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Every artifact of `a` equals `b`'s, byte for byte.
void same_artifacts(const fs::path& a, const fs::path& b) {
  const auto names = artifacts(a);
  REQUIRE(names.size() == 3);
  CHECK(artifacts(b) == names);
  for (const auto& n : names) {
    INFO(n);
    CHECK(slurp((a / "dist" / n).string()) == slurp((b / "dist" / n).string()));
  }
}

nlohmann::json report(const fs::path& d) { return nlohmann::json::parse(read_text(d / "dist/report.json")); }

// The objects the server holds, by name (their sha256).
std::vector<fs::path> server_objects(const Nginx& s) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(s.root() / "cas", ec)) out.push_back(e.path());
  std::sort(out.begin(), out.end(), [](const fs::path& x, const fs::path& y) {
    return fs::file_size(x) > fs::file_size(y);  // the largest first
  });
  return out;
}

// Every object on the server hashes to its name (sha256sum from coreutils).
void objects_verify(const Nginx& s) {
  const auto objs = server_objects(s);
  REQUIRE(!objs.empty());
  for (const auto& p : objs) {
    int st = 0;
    const std::string out = qforge::test::run_capture("sha256sum " + shell_quote(p.string()), st);
    CHECK(out.substr(0, 64) == p.filename().string());
  }
}

}  // namespace

TEST_CASE("remote cache: a second empty checkout runs nothing and writes identical artifacts",
          "[remote-cache]") {
  if (!have_nginx()) return;
  TempDir t("qforge_remote_");
  Nginx server(t.path / "server", {});
  const fs::path a = checkout(t, "a"), b = checkout(t, "b"), c = checkout(t, "c");

  const Run ra = run(qforge_cmd() + " build --remote-cache " + server.url(), a);
  INFO(ra.out << ra.err);
  REQUIRE(ra.rc == 0);
  const auto ja = report(a);
  CHECK(ja["remote_cache"]["uploaded_records"] == 4);  // 3 artifacts and select-precision's plan
  CHECK(ja["remote_cache"]["warnings"].empty());
  objects_verify(server);

  // B: the URL from the environment; --explain says "remote hit".
  const Run rb = run(qforge_cmd() + " build --explain", b, "QFORGE_REMOTE_CACHE=" + server.url());
  INFO(rb.out << rb.err);
  REQUIRE(rb.rc == 0);
  CHECK(rb.err.find("remote hit") != std::string::npos);
  const auto jb = report(b);
  CHECK(jb["summary"]["built"] == 0);
  for (const auto& tr : jb["targets"]) {
    CHECK(tr["status"] == "cached");
    CHECK(tr["source"] == "remote");
  }
  for (const auto& s : jb["steps"]) CHECK(s["status"] != "built");
  // 3 artifacts, and the precision plan report.html shows (as a local cached build's does).
  CHECK(jb["remote_cache"]["hits"] == 4);
  CHECK(read_text(b / "dist/report.html").find("data-schema=\"precision/") != std::string::npos);
  same_artifacts(a, b);

  // The same manifest without any cache writes the same bytes.
  REQUIRE(run(qforge_cmd() + " build --no-cache --remote-cache " + server.url(), c).rc == 0);
  same_artifacts(a, c);
  CHECK(!report(c).contains("remote_cache"));  // --no-cache: the remote is neither read nor written

  // The flag wins over the environment, which wins over the manifest: a dead
  // URL in the manifest and the environment, the live one on the command line.
  const std::string dead = "http://127.0.0.1:" + std::to_string(free_port());
  const fs::path e = checkout(t, "e", "remote_cache = \"" + dead + "\"");
  const Run re =
      run(qforge_cmd() + " build --remote-cache " + server.url(), e, "QFORGE_REMOTE_CACHE=" + dead);
  INFO(re.out << re.err);
  REQUIRE(re.rc == 0);
  CHECK(report(e)["remote_cache"]["hits"] == 4);
  const fs::path f = checkout(t, "f", "remote_cache = \"" + dead + "\"");
  REQUIRE(run(qforge_cmd() + " build", f, "QFORGE_REMOTE_CACHE=" + server.url()).rc == 0);
  CHECK(report(f)["remote_cache"]["hits"] == 4);
  same_artifacts(a, f);

  // qforge plan asks the server (HEAD) and says what it has.
  const fs::path g = checkout(t, "g");
  const Run rp = run(qforge_cmd() + " build --dry-run --remote-cache " + server.url(), g);
  INFO(rp.out << rp.err);
  CHECK(rp.rc == 0);
  CHECK(rp.err.find("remote hit: would download") != std::string::npos);
  CHECK(!fs::exists(g / "dist"));
  const Run rq = run(qforge_cmd() + " plan --remote-cache " + server.url(), g);
  CHECK(rq.rc == 0);
  CHECK(rq.out.find("cached: remote hit: would download from " + server.url()) != std::string::npos);
  CHECK((!fs::exists(g / "cache/keys") || fs::is_empty(g / "cache/keys")));
}

TEST_CASE("remote cache: a changed target loads the steps it shares from the remote", "[remote-cache]") {
  if (!have_nginx()) return;
  TempDir t("qforge_remote_");
  Nginx server(t.path / "server", {});
  const fs::path a = checkout(t, "a");
  REQUIRE(run(qforge_cmd() + " build --remote-cache " + server.url(), a).rc == 0);
  // B quantizes llm-fit differently after the same precision plan: the plan's
  // Table comes from the server, the quantization and emit run.
  std::string targets = kTargets;
  const std::string from = "type = \"Q4_K_M\" } ]";
  REQUIRE(targets.find(from) != std::string::npos);
  targets.replace(targets.find(from), from.size(), "type = \"Q4_K_M\", token_embedding_type = \"Q8_0\" } ]");
  const fs::path b = checkout(t, "b", "", kModelArgs, targets), c = checkout(t, "c", "", kModelArgs, targets);
  const Run rb = run(qforge_cmd() + " build --explain --remote-cache " + server.url(), b);
  INFO(rb.out << rb.err);
  REQUIRE(rb.rc == 0);
  CHECK(rb.err.find("load select-precision llm (budget=Q4_K_M") != std::string::npos);
  const auto jb = report(b);
  CHECK(jb["summary"]["built"] == 1);
  bool plan_from_remote = false;
  for (const auto& s : jb["steps"]) {
    if (s["pass"] == "select-precision") {
      CHECK(s["status"] == "cached");
      plan_from_remote = s.value("source", "") == "remote";
    }
    if (s["pass"] == "emit" && s["targets"][0] == "llm-fit") CHECK(s["status"] == "built");
  }
  CHECK(plan_from_remote);
  // The same bytes as a build of B's manifest without any cache.
  REQUIRE(run(qforge_cmd() + " build --no-cache", c).rc == 0);
  same_artifacts(b, c);
}

TEST_CASE("remote cache: results already in the local cache are uploaded when the server lacks them",
          "[remote-cache]") {
  if (!have_nginx()) return;
  TempDir t("qforge_remote_");
  Nginx server(t.path / "server", {});
  const fs::path a = checkout(t, "a"), b = checkout(t, "b");
  REQUIRE(run(qforge_cmd() + " build", a).rc == 0);  // no remote cache yet
  const Run ra = run(qforge_cmd() + " build --remote-cache " + server.url(), a);
  INFO(ra.out << ra.err);
  REQUIRE(ra.rc == 0);
  const auto ja = report(a);
  CHECK(ja["summary"]["built"] == 0);
  CHECK(ja["remote_cache"]["uploaded_records"] == 4);  // 3 cached artifacts and the plan the report reads
  // Once there, a no-op build uploads nothing.
  REQUIRE(run(qforge_cmd() + " build --remote-cache " + server.url(), a).rc == 0);
  CHECK(report(a)["remote_cache"]["uploaded_records"] == 0);
  const Run rb = run(qforge_cmd() + " build --remote-cache " + server.url(), b);
  REQUIRE(rb.rc == 0);
  CHECK(report(b)["summary"]["built"] == 0);
  CHECK(report(b)["remote_cache"]["hits"] == 4);
  CHECK(read_text(b / "dist/report.html").find("data-schema=\"precision/") != std::string::npos);
  same_artifacts(a, b);
}

TEST_CASE("remote cache: a corrupt object on the server is reported, not used, and rebuilt",
          "[remote-cache]") {
  if (!have_nginx()) return;
  TempDir t("qforge_remote_");
  Nginx server(t.path / "server", {});
  const fs::path a = checkout(t, "a"), b = checkout(t, "b");
  REQUIRE(run(qforge_cmd() + " build --remote-cache " + server.url(), a).rc == 0);
  // Every object keeps its size, one byte in the middle changes.
  for (const auto& p : server_objects(server)) {
    std::string bytes = read_text(p);
    bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x5a);
    std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  }
  const Run rb = run(qforge_cmd() + " build --remote-cache " + server.url(), b);
  INFO(rb.out << rb.err);
  REQUIRE(rb.rc == 0);
  CHECK(rb.err.find("is corrupt") != std::string::npos);
  CHECK(rb.err.find(server.url() + "/cas/") != std::string::npos);
  const auto jb = report(b);
  CHECK(jb["summary"]["built"] == 3);
  CHECK(jb["remote_cache"]["hits"] == 0);
  CHECK(!jb["remote_cache"]["warnings"].empty());
  same_artifacts(a, b);
  // B replaced what it found corrupt: the server verifies again, and a third checkout hits.
  objects_verify(server);
  const fs::path c = checkout(t, "c");
  REQUIRE(run(qforge_cmd() + " build --remote-cache " + server.url(), c).rc == 0);
  CHECK(report(c)["remote_cache"]["hits"] == 4);
  same_artifacts(a, c);
}

TEST_CASE("remote cache: records that are not qforge's, or too large, are reported and ignored",
          "[remote-cache]") {
  if (!have_nginx()) return;
  TempDir t("qforge_remote_");
  Nginx server(t.path / "server", {});
  const fs::path a = checkout(t, "a"), b = checkout(t, "b"), c = checkout(t, "c");
  REQUIRE(run(qforge_cmd() + " build --remote-cache " + server.url(), a).rc == 0);
  // Records live at 64 hex digits, the shape bazel-remote requires.
  std::vector<fs::path> records;
  for (const auto& e : fs::directory_iterator(server.root() / "ac")) {
    const std::string name = e.path().filename().string();
    CHECK(name.size() == 64);
    CHECK(name.find_first_not_of("0123456789abcdef") == std::string::npos);
    records.push_back(e.path());
  }
  REQUIRE(records.size() == 4);
  // Another client's bytes under our keys: a Bazel-like binary body, a
  // record of another node, and one larger than 16 MiB.
  std::ofstream(records[0], std::ios::binary | std::ios::trunc) << std::string("\x0a\x22\x0a\x20garbage", 12);
  std::string other = read_text(records[2]);
  std::ofstream(records[1], std::ios::binary | std::ios::trunc) << other;
  std::ofstream(records[3], std::ios::binary | std::ios::trunc) << std::string(17u << 20, 'x');
  const Run rb = run(qforge_cmd() + " build --remote-cache " + server.url(), b);
  INFO(rb.out << rb.err);
  REQUIRE(rb.rc == 0);
  CHECK(rb.err.find("is not usable (its first line is") != std::string::npos);
  CHECK(rb.err.find("is not usable (it is the record of another node)") != std::string::npos);
  CHECK(rb.err.find("is larger than 16.0 MiB") != std::string::npos);
  CHECK(report(b)["remote_cache"]["warnings"].size() == 3);
  same_artifacts(a, b);
  // B's uploads rewrote the records: a third checkout hits everywhere.
  REQUIRE(run(qforge_cmd() + " build --remote-cache " + server.url(), c).rc == 0);
  CHECK(report(c)["remote_cache"]["hits"] == 4);
  same_artifacts(a, c);
}

TEST_CASE("remote cache: a truncated object is reported, not used, and rebuilt", "[remote-cache]") {
  if (!have_nginx()) return;
  TempDir t("qforge_remote_");
  Nginx server(t.path / "server", {});
  const fs::path a = checkout(t, "a"), b = checkout(t, "b");
  REQUIRE(run(qforge_cmd() + " build --remote-cache " + server.url(), a).rc == 0);
  const auto objs = server_objects(server);
  REQUIRE(!objs.empty());
  for (const auto& p : objs) fs::resize_file(p, fs::file_size(p) / 2);
  const Run rb = run(qforge_cmd() + " build --remote-cache " + server.url(), b);
  INFO(rb.out << rb.err);
  REQUIRE(rb.rc == 0);
  CHECK(rb.err.find("truncated") != std::string::npos);
  CHECK(report(b)["summary"]["built"] == 3);
  same_artifacts(a, b);
  // Nothing half-downloaded stays in B's cache.
  for (const auto& e : fs::recursive_directory_iterator(b / "cache/objects"))
    if (e.is_regular_file()) CHECK(e.path().filename().string().find(".tmp-") == std::string::npos);
}

TEST_CASE("remote cache: the server killed mid-download is a warning and the build goes on locally",
          "[remote-cache]") {
  if (!have_nginx()) return;
  TempDir t("qforge_remote_");
  // Responses at 256 KiB/s: the F16 artifact (about 10 MB) would take ~40 s to download.
  Nginx server(t.path / "server", {"256k", ""});
  const std::string big = "--layers 2 --embd 512 --ff 1024 --vocab 512 --heads 8 --heads-kv 4";
  const std::string targets =
      "[[targets]]\nname = \"big\"\nmodel = \"llm\"\npipeline = [ { pass = \"quantize-gguf\", type = \"F16\" "
      "} ]\n";
  const fs::path a = checkout(t, "a", "", big, targets), b = checkout(t, "b", "", big, targets);
  REQUIRE(run(qforge_cmd() + " build --remote-cache " + server.url(), a).rc == 0);
  REQUIRE(fs::file_size(server_objects(server).front()) > 4u << 20);

  const fs::path out = b / ".out", err = b / ".err";
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::chdir(b.c_str()) != 0) ::_exit(127);
    const std::string cmd = qforge_cmd() + " build --remote-cache " + server.url() + " >.out 2>.err";
    ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Wait until a download is under way (a temporary object with bytes in it), then kill the server.
  bool cut = false;
  for (int i = 0; i < 400 && !cut; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::error_code ec;
    for (const auto& e : fs::recursive_directory_iterator(b / "cache/objects", ec))
      if (e.path().filename().string().find(".tmp-") != std::string::npos &&
          fs::file_size(e.path(), ec) > 100000)
        cut = true;
  }
  server.stop(SIGKILL);
  int st = 0;
  ::waitpid(pid, &st, 0);
  INFO(read_text(out) << read_text(err));
  REQUIRE(cut);
  REQUIRE(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  const std::string e = read_text(err);
  CHECK(e.find("failed after") != std::string::npos);
  CHECK(e.find("the build goes on without the remote cache") != std::string::npos);
  CHECK(report(b)["summary"]["built"] == 1);
  CHECK(slurp((a / "dist/big.gguf").string()) == slurp((b / "dist/big.gguf").string()));
}

TEST_CASE("remote cache: a server that is down is a warning, with --strict an error", "[remote-cache]") {
  if (!have_nginx()) return;
  TempDir t("qforge_remote_");
  const std::string dead = "http://127.0.0.1:" + std::to_string(free_port());
  const fs::path a = checkout(t, "a"), b = checkout(t, "b");
  const Run ra = run(qforge_cmd() + " build --remote-cache " + dead, a);
  INFO(ra.out << ra.err);
  CHECK(ra.rc == 0);
  CHECK(ra.err.find("warning: remote cache " + dead) != std::string::npos);
  CHECK(ra.err.find("the build goes on without the remote cache") != std::string::npos);
  CHECK(report(a)["summary"]["built"] == 3);
  CHECK(report(a)["remote_cache"]["warnings"].size() == 1);  // said once, not per step

  const Run rb = run(qforge_cmd() + " build --strict --remote-cache " + dead, b);
  INFO(rb.out << rb.err);
  CHECK(rb.rc == 1);
  CHECK(rb.err.find("error: remote cache " + dead) != std::string::npos);
  CHECK(rb.err.find("--strict makes remote cache failures errors") != std::string::npos);
  CHECK(!fs::exists(b / "dist/llm-Q8_0.gguf"));

  // A URL that is not http(s) is refused where it is written.
  const fs::path c = checkout(t, "c", "remote_cache = \"ftp://cache.example\"");
  const Run rc = run(qforge_cmd() + " plan", c);
  CHECK(rc.rc == 1);
  CHECK(rc.err.find("qforge.toml:4:") != std::string::npos);
  CHECK(rc.err.find("must be an http:// or https:// URL") != std::string::npos);
}

TEST_CASE("remote cache: a server that never answers times out, a warning, and the build goes on",
          "[remote-cache]") {
  if (!have_nginx()) return;
  TempDir t("qforge_remote_");
  // A socket that listens and never accepts: connections complete in the
  // kernel's backlog, and no byte ever comes back.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(fd, 16) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string url = "http://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));
  const fs::path a = checkout(t, "a");
  const auto t0 = std::chrono::steady_clock::now();
  const Run ra = run(qforge_cmd() + " build --remote-cache " + url, a, "QFORGE_REMOTE_CACHE_TIMEOUT=2");
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ::close(fd);
  INFO(ra.out << ra.err);
  CHECK(ra.rc == 0);
  CHECK(ra.err.find("warning: remote cache " + url) != std::string::npos);
  CHECK(ra.err.find("the build goes on without the remote cache") != std::string::npos);
  CHECK(report(a)["summary"]["built"] == 3);
  CHECK(secs < 30);  // one timeout, not one per step
  // A bad value is an error that says what is expected.
  const Run rb = run(qforge_cmd() + " build --remote-cache " + url, a, "QFORGE_REMOTE_CACHE_TIMEOUT=soon");
  CHECK(rb.rc == 1);
  CHECK(rb.err.find("QFORGE_REMOTE_CACHE_TIMEOUT must be a whole number of seconds") != std::string::npos);
}

TEST_CASE("remote cache: two builds uploading the same keys at once both succeed", "[remote-cache]") {
  if (!have_nginx()) return;
  TempDir t("qforge_remote_");
  Nginx server(t.path / "server", {});
  const fs::path a = checkout(t, "a"), b = checkout(t, "b"), c = checkout(t, "c");
  const std::string cmd = qforge_cmd() + " build -j 2 --remote-cache " + server.url() + " >.out 2>.err";
  const std::string both = "(cd " + shell_quote(a.string()) + " && " + cmd + ") & p1=$!; (cd " +
                           shell_quote(b.string()) + " && " + cmd +
                           ") & p2=$!; wait $p1; r1=$?; wait $p2; r2=$?; test $r1 = 0 -a $r2 = 0";
  const int st = std::system(("bash -c " + shell_quote(both)).c_str());
  INFO(read_text(a / ".err") << read_text(b / ".err"));
  REQUIRE(WIFEXITED(st));
  REQUIRE(WEXITSTATUS(st) == 0);
  for (const auto& d : {a, b}) {
    const auto j = report(d);
    CHECK(j["remote_cache"]["warnings"].empty());
    CHECK(j["summary"]["failed"] == 0);
  }
  same_artifacts(a, b);
  objects_verify(server);
  // The records the two wrote serve a third checkout.
  const Run rc = run(qforge_cmd() + " build --remote-cache " + server.url(), c);
  REQUIRE(rc.rc == 0);
  CHECK(report(c)["remote_cache"]["hits"] == 4);
  same_artifacts(a, c);
}

TEST_CASE("remote cache: a bearer token is sent and never written anywhere", "[remote-cache]") {
  if (!have_nginx()) return;
  TempDir t("qforge_remote_");
  const std::string token = "qf-tok-7c1e9a52d4";
  Nginx server(t.path / "server", {"", token});
  const fs::path a = checkout(t, "a"), b = checkout(t, "b", "remote_cache_token_env = \"MY_CACHE_TOKEN\""),
                 c = checkout(t, "c");
  std::vector<Run> runs;
  runs.push_back(run(qforge_cmd() + " build -v --explain --remote-cache " + server.url(), a,
                     "QFORGE_REMOTE_CACHE_TOKEN=" + token));
  REQUIRE(runs.back().rc == 0);
  CHECK(report(a)["remote_cache"]["uploaded_records"] == 4);
  // The variable the manifest names.
  runs.push_back(
      run(qforge_cmd() + " build -v --explain --remote-cache " + server.url(), b, "MY_CACHE_TOKEN=" + token));
  REQUIRE(runs.back().rc == 0);
  CHECK(report(b)["remote_cache"]["hits"] == 4);
  same_artifacts(a, b);
  // Without the token: refused (401), a warning that says how to give one, a local build.
  runs.push_back(run(qforge_cmd() + " build --explain --remote-cache " + server.url(), c));
  REQUIRE(runs.back().rc == 0);
  CHECK(runs.back().err.find("HTTP 401") != std::string::npos);
  CHECK(runs.back().err.find("QFORGE_REMOTE_CACHE_TOKEN") != std::string::npos);
  CHECK(report(c)["summary"]["built"] == 3);
  // A wrong token under --strict (a fresh checkout: c has everything locally now): an
  // error that names no token either.
  const fs::path d = checkout(t, "d");
  runs.push_back(run(qforge_cmd() + " build --strict --remote-cache " + server.url(), d,
                     "QFORGE_REMOTE_CACHE_TOKEN=wrong-" + token));
  CHECK(runs.back().rc == 1);
  runs.push_back(
      run(qforge_cmd() + " plan --remote-cache " + server.url(), a, "QFORGE_REMOTE_CACHE_TOKEN=" + token));
  for (const auto& r : runs) {
    CHECK(r.out.find(token) == std::string::npos);
    CHECK(r.err.find(token) == std::string::npos);
  }
  for (const auto& dir : {a, b, c, d})
    for (const auto& e : fs::recursive_directory_iterator(dir))
      if (e.is_regular_file()) {
        INFO(e.path());
        CHECK(read_text(e.path()).find(token) == std::string::npos);
      }
  for (const auto& e : fs::recursive_directory_iterator(server.root()))
    if (e.is_regular_file()) CHECK(read_text(e.path()).find(token) == std::string::npos);
}

TEST_CASE("remote cache: URLs are http(s), messages hide user information, record keys are 64 hex",
          "[remote-cache]") {
  using qforge::RemoteCache;
  auto at = [](const std::string& url) {
    qforge::RemoteCacheConfig c;
    c.url = url;
    return c;
  };
  CHECK(RemoteCache(at("https://ci:s3cret@cache.example:8443/pool/")).display_url() ==
        "https://cache.example:8443/pool");
  CHECK(RemoteCache(at("http://127.0.0.1:9090")).display_url() == "http://127.0.0.1:9090");
  CHECK_THROWS_WITH(RemoteCache(at("ftp://cache.example")),
                    Catch::Contains("is not an http:// or https:// URL"));
  CHECK_THROWS_AS(RemoteCache(at("cache.example:8080")), qforge::Error);
  try {
    RemoteCache(at("ftp://ci:s3cret@cache.example"));
    FAIL("an ftp:// URL was accepted");
  } catch (const qforge::Error& e) {
    CHECK(std::string(e.what()).find("s3cret") == std::string::npos);
    CHECK(std::string(e.what()).find("ftp://cache.example") != std::string::npos);
  }
  const std::string k = RemoteCache::ac_key("98c147d877ae34a8f5791b5fe94b99ef");
  CHECK(k.size() == 64);
  CHECK(k.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(k != RemoteCache::ac_key("98c147d877ae34a8f5791b5fe94b99ee"));
}
