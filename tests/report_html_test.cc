// dist/report.html and multi-device builds: the page rendered from a made-up
// BuildResult (escaping, the Pareto front, precision plans of any layout);
// one manifest building a classifier for three ONNX Runtime profiles and an
// LLM for three budgets in one build (one calibration for the three ONNX
// targets, each artifact equal to a single-target build's); that build's
// report.html rendered by headless Chromium (the chart has a point per
// evaluated target, the front is marked, the page makes no network request),
// and a cached build's page equal to the uncached one's.
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <string>

#include "qforge/build.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using namespace qforge;
using Json = nlohmann::json;

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + needle.size())) ++n;
  return n;
}

std::string bin_dir() { return fs::path(QFORGE_BIN).parent_path().string(); }

struct Run {
  int rc;
  std::string out;
};

// `cmd` in `dir`, stdout and stderr together.
Run sh(const std::string& cmd, const fs::path& dir) {
  int status = 0;
  std::string out =
      test::run_capture("cd " + test::shell_quote(dir.string()) + " && { " + cmd + "; } 2>&1", status);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128, out};
}

std::string tool(const std::string& name) { return test::shell_quote(bin_dir() + "/" + name); }
std::string qforge_bin() { return test::shell_quote(QFORGE_BIN); }

Value str(const std::string& s) { return Value::of_string(s); }
Value num(double v) { return Value::of_float(v); }
Value obj(std::vector<std::pair<std::string, Value>> kv) {
  Value v;
  v.kind = Value::Kind::Table;
  v.table = std::move(kv);
  return v;
}

TargetResult target(const std::string& name, const std::string& model, uint64_t bytes, double bpw) {
  TargetResult t;
  t.name = name;
  t.model = model;
  t.format = "onnx";
  t.artifact = "/x/dist/" + name + ".onnx";
  t.bytes = bytes;
  t.bits_per_weight = bpw;
  t.status = "built";
  return t;
}

// ------------------------------------------------------------ the manifest of
// the multi-device tests: a classifier for three ONNX Runtime profiles (one
// calibration), an LLM for three budgets.
const char* kDevices[] = {"ort-cpu-vnni", "qnn-htp", "tensorrt"};
const char* kBudgets[] = {"Q3_K_M", "Q4_K_M", "5.5bpw"};

std::string onnx_name(const char* profile) { return std::string("cnn-") + profile; }
std::string gguf_name(const char* budget) { return std::string("llm-fit-") + budget; }

const char* kManifest = R"([models.cnn]
path = "models/cnn.onnx"
[models.llm]
path = "models/tiny.gguf"

[datasets.photos]
images = ["images/calib/*.png"]
resize = [32, 32]
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
[datasets.holdout]
images = ["images/holdout/*.png"]
resize = [32, 32]
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]

[[targets]]
name = "cnn-{profile}"
model = "cnn"
matrix = { profile = ["ort-cpu-vnni", "qnn-htp", "tensorrt"] }
profile = "{profile}"
pipeline = [
  { pass = "calibrate", dataset = "photos", method = "percentile" },
  { pass = "quantize-static" },
  { pass = "evaluate", dataset = "holdout" },
]

[[targets]]
name = "llm-fit-{budget}"
model = "llm"
matrix = { budget = ["Q3_K_M", "Q4_K_M", "5.5bpw"] }
pipeline = [
  { pass = "select-precision", budget = "{budget}" },
  { pass = "quantize-gguf", type = "Q4_K_M" },
]
)";

// Models and images in `dir/inputs`, shared by every build directory of a test.
void make_inputs(const fs::path& inputs) {
  fs::create_directories(inputs / "models");
  REQUIRE(sh(tool("make_tiny_onnx") + " cnn models/cnn.onnx", inputs).rc == 0);
  REQUIRE(sh(tool("make_tiny_llama") + " models/tiny.gguf --layers 2 --embd 256 --ff 768 --vocab 512", inputs)
              .rc == 0);
  REQUIRE(sh(tool("make_images") + " images/calib 8 48 40 1", inputs).rc == 0);
  REQUIRE(sh(tool("make_images") + " images/holdout 4 48 40 2", inputs).rc == 0);
}

// A build directory: the manifest beside links to the shared inputs.
fs::path build_dir(const fs::path& root, const std::string& name) {
  const fs::path d = root / name;
  fs::create_directories(d);
  std::ofstream(d / "qforge.toml") << kManifest;
  fs::create_directory_symlink(root / "inputs/models", d / "models");
  fs::create_directory_symlink(root / "inputs/images", d / "images");
  return d;
}

// ------------------------------------------------------------ Chromium
bool have_chromium() { return std::system("command -v chromium >/dev/null 2>&1") == 0; }

// Headless Chromium on `page` with its own profile, background networking off
// and a net log; `what` is `--dump-dom` or `--screenshot=...`. Returns the
// output (the DOM for --dump-dom) and the URLs of the network requests the
// page itself made (those whose network isolation key is the page's file://
// origin; Chromium's own requests are told apart by theirs).
struct Rendered {
  int rc = 0;
  std::string dom;
  std::vector<std::string> page_requests;
};

Rendered chromium(const fs::path& page, const fs::path& scratch, const std::string& what) {
  const fs::path profile = scratch / "chromium-profile", netlog = scratch / "netlog.json";
  fs::remove_all(profile);
  fs::remove(netlog);
  const std::string cmd =
      "timeout -k 5 120 chromium --headless --disable-gpu --no-sandbox --no-first-run --hide-scrollbars "
      "--disable-background-networking --disable-component-update --disable-sync --disable-extensions "
      "--window-size=1200,2400 --user-data-dir=" +
      test::shell_quote(profile.string()) + " --log-net-log=" + test::shell_quote(netlog.string()) + " " +
      what + " " + test::shell_quote("file://" + page.string()) + " 2>/dev/null";
  int status = 0;
  Rendered r;
  r.dom = test::run_capture(cmd, status);
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  const Json log = Json::parse(read(netlog), nullptr, false);
  REQUIRE_FALSE(log.is_discarded());
  const int start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"];
  for (const auto& e : log["events"]) {
    if (e["type"] != start_job || !e.contains("params")) continue;
    const auto& p = e["params"];
    const std::string url = p.value("url", ""), nik = p.value("network_isolation_key", "");
    if (nik.rfind("file://", 0) == 0 && url.rfind("file:", 0) != 0) r.page_requests.push_back(url);
  }
  fs::remove_all(profile);
  return r;
}

}  // namespace

TEST_CASE("report.html: escaped strings, the Pareto front per model, precision plans of any layout",
          "[report][html]") {
  BuildResult r;
  // Model m: a (4 bits, 0.99) and b (8, 0.999) are on the front; c (8, 0.995)
  // and d (16, 0.999) are dominated by b. Model n has one point, on its own front.
  r.targets.push_back(target("a<script>alert(1)</script>", "m", 100, 4));
  r.targets.push_back(target("b", "m", 200, 8));
  r.targets.push_back(target("c", "m", 200, 8));
  r.targets.push_back(target("d", "m", 400, 16));
  r.targets.push_back(target("e", "n", 50, 4));
  r.targets.push_back(target("f-no-fidelity", "m", 80, 3));
  r.targets.push_back(target("g-failed", "m", 0, 0));
  const double cos[] = {0.99, 0.999, 0.995, 0.999, 0.9};
  for (int i = 0; i < 5; ++i) {
    r.targets[i].metrics["cosine"] = cos[i];
    r.targets[i].metrics["cosine[y&z]"] = cos[i];
    r.targets[i].metrics["sqnr_db[y&z]"] = 20 + i;
  }
  r.targets[6].status = "failed";
  r.targets[6].error = "quantize-static: <bad> & worse";
  r.targets[1].warnings.push_back("a \"quoted\" warning");
  r.targets[1].skipped.push_back({"quantize-static", "no kernel", "node 'n<1>' (Softmax)"});

  // A GGUF plan (per tensor type, bytes, error) and an ONNX one (per node
  // name, op, precision, sensitivity, under "format": "onnx").
  Table gguf;
  gguf.schema = "precision/1";
  gguf.data =
      obj({{"method", str("exact DP")},
           {"budget", str("Q4_K_M")},
           {"file_bytes", Value::of_int(123456)},
           {"tensors",
            obj({{"blk.0.attn_q.weight",
                  obj({{"type", str("Q4_K")}, {"bytes", Value::of_int(1000)}, {"error", num(0.5)}})},
                 {"blk.0.ffn_down.weight",
                  obj({{"type", str("Q6_K")}, {"bytes", Value::of_int(2000)}, {"error", num(0.25)}})}})},
           {"counts", obj({{"Q4_K", Value::of_int(1)}, {"Q6_K", Value::of_int(1)}})}});
  // The ONNX layout (passes/quantize-static/onnx_precision_plan.h on the
  // onnxprec branch): nodes as name -> {op, precision, sensitivity}, small
  // maps of scalars (baseline, achieved, counts).
  Table onnx;
  onnx.schema = "precision/1";
  Value nodes = obj({});
  const char* prec[] = {"int8", "int16", "float"};
  for (int i = 0; i < 3; ++i)
    nodes.table.emplace_back(
        "conv<" + std::to_string(i) + ">",
        obj({{"op", str("Conv")}, {"precision", str(prec[i])}, {"sensitivity", num(0.1 * (i + 1))}}));
  onnx.data =
      obj({{"format", str("onnx")},
           {"per_channel", Value::of_bool(true)},
           {"baseline", obj({{"cosine", num(0.98)}, {"sqnr_db", num(17)}})},
           {"nodes", nodes},
           {"counts",
            obj({{"float", Value::of_int(1)}, {"int16", Value::of_int(1)}, {"int8", Value::of_int(1)}})}});
  // Entries as a list of records with their own names.
  Table listed;
  listed.schema = "precision/2";
  Value entries;
  entries.kind = Value::Kind::List;
  entries.list.push_back(obj({{"name", str("first")}, {"precision", str("int8")}}));
  entries.list.push_back(obj({{"name", str("second")}, {"precision", str("float")}}));
  listed.data = obj({{"entries", entries}});
  r.targets[3].tables.push_back(
      {"a later layout", "select-precision", "k3", std::make_shared<Table>(listed)});
  r.targets[1].tables.push_back(
      {"select-precision m (budget=Q4_K_M)", "select-precision", "k1", std::make_shared<Table>(gguf)});
  r.targets[2].tables.push_back(
      {"select-precision m (onnx)", "select-precision", "k2", std::make_shared<Table>(onnx)});

  const std::string html = report_html(r, "/x");
  // Every string from a manifest or a model is escaped.
  CHECK(html.find("<script>alert") == std::string::npos);
  CHECK(html.find("a&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
  CHECK(html.find("&lt;bad&gt; &amp; worse") != std::string::npos);
  CHECK(html.find("a &quot;quoted&quot; warning") != std::string::npos);
  CHECK(html.find("conv&lt;2&gt;") != std::string::npos);
  CHECK(html.find("y&amp;z") != std::string::npos);
  // One chart per model with fidelity; a point per target with both.
  CHECK(count(html, "<figure class=\"chart\"") == 2);
  CHECK(count(html, "class=\"point pareto\"") == 3);     // a, b; e
  CHECK(count(html, "class=\"point dominated\"") == 2);  // c, d
  CHECK(html.find("class=\"point pareto\" data-target=\"b\"") != std::string::npos);
  CHECK(html.find("class=\"point dominated\" data-target=\"d\"") != std::string::npos);
  // Beside the charts: the targets without a fidelity (and the failed one).
  CHECK(html.find("<li data-target=\"f-no-fidelity\">") != std::string::npos);
  CHECK(html.find("<li data-target=\"g-failed\">") != std::string::npos);
  // The plans: each collection of entries as a sortable table, sensitivities as bars.
  CHECK(html.find("data-field=\"tensors\"") != std::string::npos);
  CHECK(html.find("<td>blk.0.ffn_down.weight</td>") != std::string::npos);
  CHECK(html.find("data-field=\"counts\"") != std::string::npos);
  CHECK(html.find("data-field=\"nodes\"") != std::string::npos);
  CHECK(html.find("<td>conv&lt;1&gt;</td><td>Conv</td>") != std::string::npos);
  CHECK(html.find("data-field=\"baseline\"") != std::string::npos);
  CHECK(count(html, "<svg class=\"bars\" data-column=\"sensitivity\"") == 1);
  CHECK(count(html, "<g class=\"bar\">") == 3);
  CHECK(html.find("data-schema=\"precision/2\"") != std::string::npos);
  CHECK(html.find("<td>second</td>") != std::string::npos);
  // Self-contained: nothing to fetch.
  CHECK(html.find("http://") == std::string::npos);
  CHECK(html.find("https://") == std::string::npos);
  CHECK(html.find(" src=") == std::string::npos);
  // Deterministic.
  CHECK(report_html(r, "/x") == html);
}

TEST_CASE(
    "one build for three ONNX profiles and three GGUF budgets: one calibration, artifacts as single builds",
    "[cli][multi-device]") {
  test::TempDir root("qforge_multi_device_");
  make_inputs(root.path / "inputs");
  const fs::path all = build_dir(root.path, "all");
  auto b = sh(qforge_bin() + " build", all);
  INFO(b.out);
  REQUIRE(b.rc == 0);
  const Json report = Json::parse(read(all / "dist/report.json"));
  REQUIRE(report["targets"].size() == 6);

  // One calibration, serving the three ONNX targets.
  std::set<std::string> onnx_targets;
  for (const char* p : kDevices) onnx_targets.insert(onnx_name(p));
  size_t calibrations = 0, imports = 0, plans = 0;
  for (const auto& s : report["steps"]) {
    if (s["pass"] == "calibrate") {
      ++calibrations;
      CHECK(s["status"] == "built");
      CHECK(s["targets"].get<std::set<std::string>>() == onnx_targets);
    }
    imports += s["pass"] == "import";
    plans += s["pass"] == "select-precision";
  }
  CHECK(calibrations == 1);
  CHECK(imports == 2);
  CHECK(plans == 3);
  // Each profile got what its runtime executes (the evaluate step measured each).
  for (const auto& t : report["targets"]) {
    CHECK(t["status"] == "built");
    if (t["format"] == "onnx") CHECK(t["metrics"]["cosine"].get<double>() > 0.9);
  }

  // Each artifact equals the one a build of that target alone makes, in a
  // fresh output and cache directory.
  std::vector<std::string> names;
  for (const char* p : kDevices) names.push_back(onnx_name(p));
  for (const char* g : kBudgets) names.push_back(gguf_name(g));
  for (const auto& name : names) {
    const fs::path one = build_dir(root.path, "one-" + name);
    auto r = sh(qforge_bin() + " build --target " + name, one);
    INFO(name << "\n" << r.out);
    REQUIRE(r.rc == 0);
    const std::string ext = name.rfind("cnn-", 0) == 0 ? ".onnx" : ".gguf";
    const std::string single = read(one / "dist" / (name + ext));
    CHECK(!single.empty());
    CHECK(single == read(all / "dist" / (name + ext)));
  }
}

TEST_CASE(
    "report.html of a multi-device build renders in headless Chromium, offline, and a cached build's equals "
    "it",
    "[cli][html]") {
  test::TempDir root("qforge_report_html_");
  make_inputs(root.path / "inputs");
  const fs::path d = build_dir(root.path, "b");
  auto b = sh(qforge_bin() + " build", d);
  INFO(b.out);
  REQUIRE(b.rc == 0);
  CHECK(b.out.find("report.html") != std::string::npos);
  const std::string first = read(d / "dist/report.html");
  REQUIRE(!first.empty());
  // The select-precision plans are in it: every tensor with its chosen type.
  CHECK(count(first, "<div class=\"plan\" data-schema=\"precision/1\">") == 3);
  CHECK(first.find("<td>blk.0.attn_q.weight</td>") != std::string::npos);

  // A cached build (the artifacts restored from the cache, every Table read
  // back from it) writes the same page, but for the targets' statuses.
  fs::remove_all(d / "dist");
  auto c = sh(qforge_bin() + " build", d);
  INFO(c.out);
  REQUIRE(c.rc == 0);
  CHECK(c.out.find("0 built, 6 cached") != std::string::npos);
  const std::string cached = read(d / "dist/report.html");
  auto statuses = [](std::string s) {
    static const std::regex badge("<span class=\"badge (built|cached)\">(built|cached)</span>");
    return std::regex_replace(s, badge, "<span class=\"badge STATUS\">STATUS</span>");
  };
  CHECK(count(cached, "<span class=\"badge cached\">cached</span>") == 12);  // table and section per target
  CHECK(statuses(cached) == statuses(first));

  if (!have_chromium()) {
    WARN(
        "skipped rendering report.html: chromium is not installed (make test installs it: Makefile "
        "DEB_PACKAGES)");
    return;
  }
  // The control: a page that fetches something is caught by the net log.
  std::ofstream(root.path / "fetches.html")
      << "<html><body><img src=\"http://qforge.invalid/x.png\"></body></html>";
  const Rendered control = chromium(root.path / "fetches.html", root.path, "--dump-dom");
  REQUIRE(control.rc == 0);
  CHECK(control.page_requests == std::vector<std::string>{"http://qforge.invalid/x.png"});

  const Rendered page = chromium(d / "dist/report.html", root.path, "--dump-dom");
  REQUIRE(page.rc == 0);
  CHECK(page.page_requests.empty());
  const std::string& dom = page.dom;
  INFO(dom.substr(0, 2000));
  // The chart: one point per evaluated target (the ONNX ones), the front
  // marked, every point labelled; the GGUF targets listed beside it.
  CHECK(count(dom, "<figure class=\"chart\"") == 1);
  CHECK(count(dom, "<g class=\"point ") == 3);
  CHECK(count(dom, "<g class=\"point pareto\"") >= 1);
  for (const char* p : kDevices) {
    CHECK(dom.find("data-target=\"" + onnx_name(p) + "\" data-bpw=") != std::string::npos);
    CHECK(dom.find(">" + onnx_name(p) + "</text>") != std::string::npos);
  }
  for (const char* g : kBudgets)
    CHECK(dom.find("<li data-target=\"" + gguf_name(g) + "\">") != std::string::npos);
  CHECK(dom.find("class=\"legend\"") != std::string::npos);
  // The plans' tables sort by a click on a column's header: the page with a
  // script that clicks the first plan's "bytes" header twice and records
  // whether the rows were in order before, ascending after one click and
  // descending after two.
  CHECK(dom.find("table class=\"sortable records\" data-field=\"tensors\"") != std::string::npos);
  std::string clicking = first;
  const char* click = R"(<script>
var t = document.querySelector('table[data-field="tensors"]'), th = t.tHead.rows[0].cells[2];
function order() {
  var v = Array.prototype.map.call(t.tBodies[0].rows, function(r) { return +r.cells[2].getAttribute('data-v'); });
  var up = true, down = true;
  for (var i = 1; i < v.length; ++i) { up = up && v[i - 1] <= v[i]; down = down && v[i - 1] >= v[i]; }
  return (th.textContent === 'bytes' ? '' : 'wrong-column ') + (up ? 'ascending' : down ? 'descending' : 'unsorted');
}
var before = order(); th.click(); var once = order(); th.click(); var twice = order();
document.body.setAttribute('data-sorting', before + '/' + once + '/' + twice);
</script></body>)";
  clicking.replace(clicking.rfind("</body>"), 7, click);
  std::ofstream(d / "dist/clicking.html") << clicking;
  const Rendered sorted = chromium(d / "dist/clicking.html", root.path, "--dump-dom");
  REQUIRE(sorted.rc == 0);
  CHECK(sorted.dom.find("data-sorting=\"unsorted/ascending/descending\"") != std::string::npos);

  // A screenshot to look at (kept in the build directory).
  const fs::path shot = fs::path(QFORGE_BINARY_DIR) / "report_html_test.png";
  fs::remove(shot);
  const Rendered s =
      chromium(d / "dist/report.html", root.path, "--screenshot=" + test::shell_quote(shot.string()));
  CHECK(s.rc == 0);
  CHECK(s.page_requests.empty());
  CHECK(fs::exists(shot));
  CHECK(fs::file_size(shot) > 10000);
}
