// dist/report.html (docs/manifest.md, "The report"): one self-contained page.
// Everything is inline (CSS, SVG, a short script that sorts tables); nothing
// is fetched, so the page opens offline and from an archive. Every string
// that comes from a manifest, a model or a pass is escaped.
//
// The page is a function of the BuildResult without times: a cached build
// gives the page an uncached build gives, but for the targets' statuses.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "qforge/build.h"
#include "report_internal.h"

namespace qforge {
namespace {

using namespace report_detail;

std::string esc(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  return o;
}

// A number for an attribute or an SVG coordinate.
std::string coord(double v) { return fmt_num(v, "%.1f"); }
std::string attr_num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  return fmt_num(v, "%.17g");
}

// Colours for categorical values (types, precisions) and for the chart.
const char* const kPalette[] = {"#4263eb", "#0ca678", "#f59f00", "#ae3ec9", "#e8590c",
                                "#1098ad", "#d6336c", "#5c940d", "#7048e8", "#868e96"};
constexpr size_t kPaletteSize = sizeof kPalette / sizeof kPalette[0];

const char* kStyle = R"(
:root{--fg:#212529;--muted:#6c757d;--line:#dee2e6;--bg:#fff;--soft:#f8f9fa;--front:#d9480f;--dom:#adb5bd}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);
 background:var(--bg);margin:0 auto;max-width:1100px;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid var(--line);padding-bottom:4px}
h3{font-size:16px;margin:0 0 8px}h4{font-size:14px;margin:14px 0 6px}
.muted{color:var(--muted)}
table{border-collapse:collapse;margin:6px 0 10px;font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid var(--line);padding:3px 10px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;white-space:nowrap}
td.n{text-align:right}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th[data-dir=asc]::after{content:" \25B2";font-size:10px}
table.sortable th[data-dir=desc]::after{content:" \25BC";font-size:10px}
.chart{margin:8px 0 4px}
.chart svg{max-width:100%;height:auto;background:#fff;border:1px solid var(--line);border-radius:4px}
.chart .axis line,.chart .axis path{stroke:#495057}
.chart .grid line{stroke:#e9ecef}
.chart text{font:11px system-ui,sans-serif;fill:var(--fg)}
.chart .ttl{font-size:12px;font-weight:600}
.chart text.label{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
.legend{display:flex;flex-wrap:wrap;gap:16px;font-size:12px;margin:4px 0 12px;align-items:center}
.legend svg{vertical-align:middle;margin-right:4px}
.target{border:1px solid var(--line);border-radius:6px;padding:12px 16px;margin:12px 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0 0 6px}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0}
.badge{display:inline-block;font-size:11px;font-weight:600;border-radius:10px;padding:1px 8px;margin-left:6px;
 vertical-align:middle;background:#e9ecef}
.badge.built{background:#d3f9d8;color:#2b8a3e}.badge.cached{background:#dbe4ff;color:#364fc7}
.badge.failed{background:#ffe3e3;color:#c92a2a}.badge.pareto{background:#fff4e6;color:var(--front)}
ul.warn li{color:#c92a2a}ul.skip li,ul.note li{color:#495057}
.chip{display:inline-block;min-width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:baseline}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}
.plan{border-left:3px solid var(--line);padding-left:12px;margin-top:10px}
.nofid li{margin:2px 0}
.bars text{font:11px system-ui,sans-serif;fill:var(--fg)}
)";

// Sorts a table.sortable by the clicked column (numbers by data-v).
const char* kScript = R"(
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
  var d=th.getAttribute('data-dir')==='asc'?'desc':'asc',b=t.tBodies[0];
  t.querySelectorAll('th').forEach(function(h){h.removeAttribute('data-dir')});th.setAttribute('data-dir',d);
  var key=function(r){var c=r.cells[i];return c?(c.hasAttribute('data-v')?c.getAttribute('data-v'):c.textContent):''};
  Array.prototype.slice.call(b.rows).sort(function(x,y){var a=key(x),c=key(y),na=parseFloat(a),nc=parseFloat(c),
   r=(!isNaN(na)&&!isNaN(nc))?na-nc:a.localeCompare(c);return d==='asc'?r:-r}).forEach(function(r){b.appendChild(r)});
 })})});
)";

// The fidelity a chart plots: the worst output's cosine.
bool fidelity_of(const TargetResult& t, double* v) {
  auto it = t.metrics.find("cosine");
  if (it == t.metrics.end() || !std::isfinite(it->second)) return false;
  *v = it->second;
  return true;
}

bool failed(const TargetResult& t) { return t.status == "failed" || t.status == "skipped"; }

// "Nice" ticks covering [lo, hi].
std::vector<double> ticks(double lo, double hi, int want = 6) {
  const double span = hi - lo;
  if (!(span > 0)) return {lo};
  const double raw = span / want, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> out;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
    out.push_back(std::fabs(v) < step * 1e-9 ? 0 : v);
  return out;
}

// Enough decimals to write every multiple of `step` exactly (2.5e-6: 7).
std::string tick_label(double v, double step) {
  int decimals = 0;
  while (decimals < 10) {
    const double scaled = step * std::pow(10.0, decimals);
    if (std::fabs(scaled - std::round(scaled)) < 1e-6 * scaled) break;
    ++decimals;
  }
  char f[16];
  std::snprintf(f, sizeof f, "%%.%df", decimals);
  return fmt_num(v, f);
}

// A metric's value: integers as integers, else six significant digits.
std::string metric_text(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) return fmt_num(v, "%.0f");
  return fmt_num(v, "%.6g");
}

struct Point {
  size_t target;  // index into BuildResult::targets
  double x, y;    // bits per weight, cosine
  bool front = false;
};

// Marks the points no other point beats on both axes (fewer bits, higher
// fidelity): the Pareto front.
void mark_front(std::vector<Point>& pts) {
  for (auto& p : pts) {
    p.front = true;
    for (const auto& q : pts)
      if (&q != &p && q.x <= p.x && q.y >= p.y && (q.x < p.x || q.y > p.y)) {
        p.front = false;
        break;
      }
  }
}

std::string target_id(size_t i) { return "t" + std::to_string(i); }

// One chart: a model's targets, bits per weight against cosine.
void chart(std::ostream& os, const BuildResult& r, const std::string& model, std::vector<Point> pts) {
  mark_front(pts);
  const double W = 760, H = 400, R = 170, T = 30, B = 48;
  double x0 = pts[0].x, x1 = x0, y0 = pts[0].y, y1 = y0;
  for (const auto& p : pts) {
    x0 = std::min(x0, p.x), x1 = std::max(x1, p.x);
    y0 = std::min(y0, p.y), y1 = std::max(y1, p.y);
  }
  auto pad = [](double& lo, double& hi, double min_span) {
    const double span = std::max(hi - lo, min_span);
    const double mid = (lo + hi) / 2;
    lo = mid - span * 0.58, hi = mid + span * 0.58;
  };
  const double ymax = y1;
  pad(x0, x1, std::max(0.5, std::fabs(x1) * 0.05));
  pad(y0, y1, std::max(1e-7, std::fabs(y1) * 1e-7));
  if (x0 < 0) x1 -= x0, x0 = 0;
  if (y1 > 1 && ymax <= 1) y0 -= y1 - 1, y1 = 1;  // a cosine is at most 1
  const auto xt = ticks(x0, x1), yt = ticks(y0, y1, 5);
  const double xstep = xt.size() > 1 ? xt[1] - xt[0] : 1, ystep = yt.size() > 1 ? yt[1] - yt[0] : 1e-3;
  size_t widest = 0;  // the y ticks' labels, left of the axis
  for (double v : yt) widest = std::max(widest, tick_label(v, ystep).size());
  const double L = 34 + 6.6 * static_cast<double>(widest);
  const double pw = W - L - R, ph = H - T - B;
  // Values map inside the frame with a margin, so no point sits on an axis.
  auto sx = [&](double v) { return L + 10 + (v - x0) / (x1 - x0) * (pw - 20); };
  auto sy = [&](double v) { return T + 10 + (y1 - v) / (y1 - y0) * (ph - 20); };

  os << "<figure class=\"chart\" data-model=\"" << esc(model) << "\">\n<svg viewBox=\"0 0 " << coord(W) << " "
     << coord(H) << "\" width=\"" << coord(W) << "\" height=\"" << coord(H) << "\" role=\"img\" aria-label=\""
     << esc("model " + model + ": bits per weight against cosine") << "\">\n";
  os << "<text class=\"ttl\" x=\"" << coord(L) << "\" y=\"18\">" << esc("model " + model)
     << ": size against fidelity</text>\n";
  // Grid and axes.
  os << "<g class=\"grid\">";
  for (double v : xt)
    os << "<line x1=\"" << coord(sx(v)) << "\" x2=\"" << coord(sx(v)) << "\" y1=\"" << coord(T) << "\" y2=\""
       << coord(T + ph) << "\"/>";
  for (double v : yt)
    os << "<line x1=\"" << coord(L) << "\" x2=\"" << coord(L + pw) << "\" y1=\"" << coord(sy(v)) << "\" y2=\""
       << coord(sy(v)) << "\"/>";
  os << "</g>\n<g class=\"axis\"><path fill=\"none\" d=\"M" << coord(L) << " " << coord(T) << "V"
     << coord(T + ph) << "H" << coord(L + pw) << "\"/>";
  for (double v : xt)
    os << "<text x=\"" << coord(sx(v)) << "\" y=\"" << coord(T + ph + 16) << "\" text-anchor=\"middle\">"
       << tick_label(v, xstep) << "</text>";
  for (double v : yt)
    os << "<text x=\"" << coord(L - 6) << "\" y=\"" << coord(sy(v) + 4) << "\" text-anchor=\"end\">"
       << tick_label(v, ystep) << "</text>";
  os << "<text x=\"" << coord(L + pw / 2) << "\" y=\"" << coord(H - 8)
     << "\" text-anchor=\"middle\">bits per weight (smaller is better)</text>";
  os << "<text transform=\"rotate(-90)\" x=\"" << coord(-(T + ph / 2))
     << "\" y=\"14\" text-anchor=\"middle\">"
     << "cosine, worst output (higher is better)</text></g>\n";
  // The front as a staircase: what the best target at each size attains.
  std::vector<Point> front;
  for (const auto& p : pts)
    if (p.front) front.push_back(p);
  std::sort(front.begin(), front.end(), [](const Point& a, const Point& b) { return a.x < b.x; });
  if (front.size() > 1) {
    os << "<path class=\"front-line\" fill=\"none\" stroke=\"var(--front)\" stroke-width=\"1.5\" "
          "stroke-dasharray=\"5 3\" d=\"M"
       << coord(sx(front[0].x)) << " " << coord(sy(front[0].y));
    for (size_t i = 1; i < front.size(); ++i)
      os << "H" << coord(sx(front[i].x)) << "V" << coord(sy(front[i].y));
    os << "\"/>\n";
  }
  // Points first, then their labels on top: each label beside its point,
  // moved down while it would cover another label or point (with a leader
  // line back to its point when moved).
  struct Box {
    double x0, x1, y;  // y: the text's baseline; a box is 13 units tall
  };
  std::vector<Box> placed;
  for (const auto& p : pts) placed.push_back({sx(p.x) - 7, sx(p.x) + 7, sy(p.y) + 4});
  for (const auto& p : pts) {
    const TargetResult& t = r.targets[p.target];
    os << "<g class=\"" << (p.front ? "point pareto" : "point dominated") << "\" data-target=\""
       << esc(t.name) << "\" data-bpw=\"" << attr_num(p.x) << "\" data-fidelity=\"" << attr_num(p.y)
       << "\"><title>"
       << esc(t.name + (p.front ? " (Pareto front)" : "") + ": " + fmt_num(p.x, "%.3f") +
              " bits per weight, " + human_bytes(t.bytes) + ", cosine " + fmt_num(p.y, "%.6f"))
       << "</title>";
    if (p.front)
      os << "<circle cx=\"" << coord(sx(p.x)) << "\" cy=\"" << coord(sy(p.y))
         << "\" r=\"6\" fill=\"var(--front)\" stroke=\"#fff\" stroke-width=\"1.5\"/>";
    else
      os << "<circle cx=\"" << coord(sx(p.x)) << "\" cy=\"" << coord(sy(p.y))
         << "\" r=\"5\" fill=\"#fff\" stroke=\"#868e96\" stroke-width=\"2\"/>";
    os << "</g>\n";
  }
  std::vector<size_t> order(pts.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return pts[a].y != pts[b].y ? pts[a].y > pts[b].y : pts[a].x < pts[b].x;
  });
  os << "<g class=\"labels\">\n";
  for (size_t k : order) {
    const Point& p = pts[k];
    const TargetResult& t = r.targets[p.target];
    const double px = sx(p.x), py = sy(p.y);
    const double w = 6.4 * static_cast<double>(t.name.size());
    const bool left = px + 9 + w > W - 4;
    const double lx0 = left ? px - 9 - w : px + 9;
    double ly = py + 4;
    for (bool moved = true; moved;) {
      moved = false;
      for (size_t b = 0; b < placed.size(); ++b) {
        if (b == k) continue;  // its own point
        if (std::fabs(placed[b].y - ly) < 13 && lx0 < placed[b].x1 && lx0 + w > placed[b].x0) {
          ly = placed[b].y + 13;
          moved = true;
        }
      }
    }
    placed.push_back({lx0, lx0 + w, ly});
    if (std::fabs(ly - (py + 4)) > 0.5)
      os << "<line x1=\"" << coord(px) << "\" y1=\"" << coord(py) << "\" x2=\""
         << coord(left ? lx0 + w : lx0 - 1) << "\" y2=\"" << coord(ly - 4)
         << "\" stroke=\"#ced4da\" stroke-width=\"1\"/>";
    os << "<rect x=\"" << coord(lx0 - 2) << "\" y=\"" << coord(ly - 10) << "\" width=\"" << coord(w + 4)
       << "\" height=\"13\" fill=\"#fff\" fill-opacity=\"0.85\"/>";
    os << "<a href=\"#" << target_id(p.target) << "\"><text class=\"label\" data-target=\"" << esc(t.name)
       << "\" x=\"" << coord(lx0) << "\" y=\"" << coord(ly) << "\"" << (p.front ? " font-weight=\"600\"" : "")
       << ">" << esc(t.name) << "</text></a>\n";
  }
  os << "</g>\n";
  os << "</svg>\n</figure>\n";
}

void legend(std::ostream& os) {
  os << "<div class=\"legend\">"
        "<span><svg width=\"14\" height=\"14\"><circle cx=\"7\" cy=\"7\" r=\"6\" fill=\"#d9480f\"/></svg>"
        "on the Pareto front: no other target of the model is smaller and at least as faithful</span>"
        "<span><svg width=\"14\" height=\"14\"><circle cx=\"7\" cy=\"7\" r=\"5\" fill=\"#fff\" "
        "stroke=\"#868e96\" "
        "stroke-width=\"2\"/></svg>dominated: another target is smaller or as small, and more faithful</span>"
        "<span><svg width=\"26\" height=\"10\"><path d=\"M1 5H25\" stroke=\"#d9480f\" stroke-width=\"1.5\" "
        "stroke-dasharray=\"5 3\"/></svg>the front</span></div>\n";
}

// ------------------------------------------------------------ Tables, generically
bool scalar(const Value& v) { return v.kind != Value::Kind::List && v.kind != Value::Kind::Table; }

std::string value_text(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Null: return "-";
    case Value::Kind::Bool: return v.b ? "true" : "false";
    case Value::Kind::Int: return std::to_string(v.i);
    case Value::Kind::Float: return fmt_num(v.f, "%.6g");
    case Value::Kind::String: return v.s;
    default: return v.display();
  }
}

bool numeric(const Value& v) { return v.kind == Value::Kind::Int || v.kind == Value::Kind::Float; }

void cell(std::ostream& os, const Value* v, const std::map<std::string, size_t>* colours = nullptr) {
  if (!v) {
    os << "<td>-</td>";
    return;
  }
  if (numeric(*v)) {
    os << "<td class=\"n\" data-v=\"" << attr_num(v->as_number()) << "\">" << esc(value_text(*v)) << "</td>";
    return;
  }
  os << "<td>";
  if (colours && v->kind == Value::Kind::String)
    if (auto it = colours->find(v->s); it != colours->end())
      os << "<span class=\"chip\" style=\"background:" << kPalette[it->second % kPaletteSize] << "\"></span>";
  os << esc(value_text(*v)) << "</td>";
}

// Records: a table of tables (keyed by name) or a list of tables.
struct Records {
  std::string title;
  bool keyed = false;
  std::vector<std::pair<std::string, const Value*>> rows;
  std::vector<std::string> columns;
};

bool as_records(const std::string& title, const Value& v, Records& out) {
  out = Records{};
  out.title = title;
  if (v.kind == Value::Kind::Table && !v.table.empty()) {
    for (const auto& [k, e] : v.table)
      if (e.kind != Value::Kind::Table) return false;
    out.keyed = true;
    for (const auto& [k, e] : v.table) out.rows.push_back({k, &e});
  } else if (v.kind == Value::Kind::List && !v.list.empty()) {
    for (const auto& e : v.list)
      if (e.kind != Value::Kind::Table) return false;
    for (const auto& e : v.list) out.rows.push_back({"", &e});
  } else {
    return false;
  }
  for (const auto& [k, e] : out.rows)
    for (const auto& [c, x] : e->table)
      if (std::find(out.columns.begin(), out.columns.end(), c) == out.columns.end()) out.columns.push_back(c);
  return true;
}

// The column that names an entry's chosen precision, if any.
std::string precision_column(const Records& rec) {
  for (const char* c : {"precision", "type", "dtype"})
    if (std::find(rec.columns.begin(), rec.columns.end(), c) != rec.columns.end()) return c;
  return "";
}

std::map<std::string, size_t> colours_of(const Records& rec, const std::string& column) {
  std::set<std::string> values;
  for (const auto& [k, e] : rec.rows)
    if (const Value* v = e->find(column); v && v->kind == Value::Kind::String) values.insert(v->s);
  std::map<std::string, size_t> out;
  for (const auto& v : values) out.emplace(v, out.size());
  return out;
}

std::string entry_name(const std::pair<std::string, const Value*>& row, size_t index) {
  if (const Value* n = row.second->find("name"); n && n->kind == Value::Kind::String) return n->s;
  return row.first.empty() ? "#" + std::to_string(index) : row.first;
}

// A horizontal bar per entry of a numeric column (the sensitivities), the
// largest first, coloured by the entry's precision.
void bar_chart(std::ostream& os, const Records& rec, const std::string& column,
               const std::map<std::string, size_t>& colours, const std::string& pcol) {
  struct Bar {
    std::string name, precision;
    double v;
  };
  std::vector<Bar> bars;
  for (size_t i = 0; i < rec.rows.size(); ++i) {
    const Value* v = rec.rows[i].second->find(column);
    if (!v || !numeric(*v) || !std::isfinite(v->as_number())) continue;
    const Value* p = pcol.empty() ? nullptr : rec.rows[i].second->find(pcol);
    bars.push_back(
        {entry_name(rec.rows[i], i), p && p->kind == Value::Kind::String ? p->s : "", v->as_number()});
  }
  if (bars.empty()) return;
  std::stable_sort(bars.begin(), bars.end(), [](const Bar& a, const Bar& b) { return a.v > b.v; });
  const size_t kMax = 60, total = bars.size();
  if (bars.size() > kMax) bars.resize(kMax);
  double lo = 0, hi = 0;
  for (const auto& b : bars) lo = std::min(lo, b.v), hi = std::max(hi, b.v);
  if (hi - lo <= 0) hi = lo + 1;
  size_t longest = 8;
  for (const auto& b : bars) longest = std::max(longest, std::min<size_t>(b.name.size(), 40));
  const double L = 10 + 6.2 * static_cast<double>(longest), W = L + 420, row = 16;
  const double H = 8 + row * static_cast<double>(bars.size());
  auto sx = [&](double v) { return L + (v - lo) / (hi - lo) * 330; };
  os << "<h4>" << esc(column) << " per entry"
     << (total > bars.size()
             ? " (the " + std::to_string(bars.size()) + " largest of " + std::to_string(total) + ")"
             : "")
     << "</h4>\n<svg class=\"bars\" data-column=\"" << esc(column) << "\" viewBox=\"0 0 " << coord(W) << " "
     << coord(H) << "\" width=\"" << coord(W) << "\" height=\"" << coord(H) << "\">\n";
  for (size_t i = 0; i < bars.size(); ++i) {
    const auto& b = bars[i];
    const double y = 4 + row * static_cast<double>(i);
    auto it = colours.find(b.precision);
    const char* fill = it == colours.end() ? kPalette[0] : kPalette[it->second % kPaletteSize];
    std::string name = b.name.size() > 40 ? b.name.substr(0, 39) + "\xE2\x80\xA6" : b.name;
    const double a = sx(std::min(0.0, b.v)), z = sx(std::max(0.0, b.v));
    os << "<g class=\"bar\"><title>"
       << esc(b.name + (b.precision.empty() ? "" : " (" + b.precision + ")") + ": " + fmt_num(b.v, "%.6g"))
       << "</title><text x=\"" << coord(L - 6) << "\" y=\"" << coord(y + 11) << "\" text-anchor=\"end\">"
       << esc(name) << "</text><rect x=\"" << coord(std::min(a, z)) << "\" y=\"" << coord(y + 2)
       << "\" width=\"" << coord(std::max(1.0, std::fabs(z - a))) << "\" height=\"" << coord(row - 4)
       << "\" fill=\"" << fill << "\"/><text x=\"" << coord(std::max(a, z) + 4) << "\" y=\"" << coord(y + 11)
       << "\">" << esc(fmt_num(b.v, "%.4g")) << (b.precision.empty() ? "" : " " + esc(b.precision))
       << "</text></g>\n";
  }
  os << "</svg>\n";
}

void records_table(std::ostream& os, const Records& rec) {
  const std::string pcol = precision_column(rec);
  const auto colours = pcol.empty() ? std::map<std::string, size_t>{} : colours_of(rec, pcol);
  for (const auto& c : rec.columns) {
    if (c.find("sensitivity") == std::string::npos) continue;
    bar_chart(os, rec, c, colours, pcol);
  }
  const bool has_name = std::find(rec.columns.begin(), rec.columns.end(), "name") != rec.columns.end();
  const bool key_col = rec.keyed && !has_name;
  os << "<details class=\"entries\"" << (rec.rows.size() <= 40 ? " open" : "") << "><summary>"
     << esc(rec.title) << ": " << rec.rows.size()
     << " entries</summary>\n<table class=\"sortable records\" data-field=\"" << esc(rec.title)
     << "\"><thead><tr>";
  if (key_col) os << "<th>name</th>";
  for (const auto& c : rec.columns) os << "<th>" << esc(c) << "</th>";
  os << "</tr></thead><tbody>\n";
  for (const auto& [k, e] : rec.rows) {
    os << "<tr>";
    if (key_col) os << "<td>" << esc(k) << "</td>";
    for (const auto& c : rec.columns) cell(os, e->find(c), c == pcol ? &colours : nullptr);
    os << "</tr>\n";
  }
  os << "</tbody></table></details>\n";
}

// A precision/1 Table (any layout): its scalar fields, small maps (counts),
// and each collection of entries as a sortable table.
void plan_section(std::ostream& os, const ReportTable& rt) {
  const Table& t = *rt.table;
  os << "<div class=\"plan\" data-schema=\"" << esc(t.schema) << "\">\n<h4>" << esc(t.schema)
     << " from step <code>" << esc(rt.step) << "</code></h4>\n";
  if (t.data.kind != Value::Kind::Table) {
    os << "<pre>" << esc(t.data.display()) << "</pre></div>\n";
    return;
  }
  std::vector<std::pair<std::string, const Value*>> scalars, maps;
  std::vector<Records> records;
  for (const auto& [k, v] : t.data.table) {
    Records rec;
    if (scalar(v) || (v.kind == Value::Kind::List &&
                      std::all_of(v.list.begin(), v.list.end(), [](const Value& x) { return scalar(x); })))
      scalars.push_back({k, &v});
    else if (as_records(k, v, rec))
      records.push_back(std::move(rec));
    else
      maps.push_back({k, &v});
  }
  if (!scalars.empty()) {
    os << "<dl class=\"facts\">";
    for (const auto& [k, v] : scalars) {
      std::string text;
      if (v->kind == Value::Kind::List)
        for (const auto& x : v->list) text += (text.empty() ? "" : ", ") + value_text(x);
      else
        text = value_text(*v);
      if (numeric(*v) && k.find("bytes") != std::string::npos)
        text += " (" + human_bytes(static_cast<uint64_t>(std::max(0.0, v->as_number()))) + ")";
      os << "<dt>" << esc(k) << "</dt><dd>" << esc(text) << "</dd>";
    }
    os << "</dl>\n";
  }
  for (const auto& [k, v] : maps) {
    if (v->kind == Value::Kind::Table &&
        std::all_of(v->table.begin(), v->table.end(), [](const auto& e) { return scalar(e.second); })) {
      os << "<table class=\"map\" data-field=\"" << esc(k) << "\"><thead><tr><th>" << esc(k)
         << "</th><th></th></tr></thead><tbody>";
      for (const auto& [mk, mv] : v->table) {
        os << "<tr><td>" << esc(mk) << "</td>";
        cell(os, &mv);
        os << "</tr>";
      }
      os << "</tbody></table>\n";
    } else {
      os << "<h4>" << esc(k) << "</h4><pre>" << esc(v->display()) << "</pre>\n";
    }
  }
  for (const auto& rec : records) records_table(os, rec);
  os << "</div>\n";
}

// ------------------------------------------------------------ targets
void fact(std::ostream& os, const std::string& k, const std::string& v) {
  os << "<dt>" << esc(k) << "</dt><dd>" << esc(v) << "</dd>";
}

void target_section(std::ostream& os, const BuildResult& r, size_t i, bool front, const std::string& base) {
  const TargetResult& t = r.targets[i];
  os << "<section class=\"target\" id=\"" << target_id(i) << "\" data-target=\"" << esc(t.name) << "\">\n<h3>"
     << esc(t.name) << "<span class=\"badge " << esc(t.status) << "\">" << esc(t.status) << "</span>"
     << (front ? "<span class=\"badge pareto\">Pareto front</span>" : "") << "</h3>\n<dl class=\"facts\">";
  fact(os, "model", t.model);
  fact(os, "profile", t.profile.empty() ? "-" : t.profile);
  fact(os, "format", t.format);
  fact(os, "artifact", rel(t.artifact, base));
  if (!failed(t)) {
    fact(os, "size", human_bytes(t.bytes) + " (" + std::to_string(t.bytes) + " bytes)");
    fact(os, "bits per weight", fmt_num(t.bits_per_weight, "%.3f"));
  }
  std::string others;
  for (const auto& [k, v] : t.metrics)
    if (!per_output(k) && k != "cosine" && k != "sqnr_db" && k != "max_abs_err" && k != "argmax_agreement")
      others += (others.empty() ? "" : ", ") + k + " " + metric_text(v);
  if (!others.empty()) fact(os, "metrics", others);
  os << "</dl>\n";
  if (!t.error.empty()) os << "<ul class=\"warn\"><li>error: " << esc(t.error) << "</li></ul>\n";
  const Breakdown b = breakdown_of(t.metrics);
  if (!b.rows.empty()) {
    os << "<h4>Fidelity against the model as imported";
    if (auto it = t.metrics.find("evaluation_samples"); it != t.metrics.end())
      os << " (" << fmt_num(it->second, "%.0f") << " samples)";
    os << "</h4>\n<table class=\"fidelity\"><thead><tr><th>output</th>";
    for (const auto& c : b.columns) os << "<th>" << esc(c) << "</th>";
    os << "</tr></thead><tbody>\n";
    for (const auto& [output, values] : b.rows) {
      os << "<tr><td>" << esc(output) << "</td>";
      for (const auto& c : b.columns) {
        auto it = values.find(c);
        if (it == values.end())
          os << "<td>-</td>";
        else
          os << "<td class=\"n\" data-v=\"" << attr_num(it->second) << "\">"
             << esc(metric_cell(c, it->second)) << "</td>";
      }
      os << "</tr>\n";
    }
    os << "</tbody></table>\n";
  }
  if (!t.warnings.empty()) {
    os << "<h4>Warnings</h4><ul class=\"warn\">";
    for (const auto& w : t.warnings) os << "<li>" << esc(w) << "</li>";
    os << "</ul>\n";
  }
  const auto skips = summarize_skips(t.skipped);
  if (!skips.empty()) {
    os << "<h4>Skipped</h4><ul class=\"skip\">";
    for (const auto& l : skips) os << "<li>" << esc(l) << "</li>";
    os << "</ul>\n";
  }
  if (!t.notes.empty()) {
    os << "<details class=\"notes\"" << (t.notes.size() <= 4 ? " open" : "") << "><summary>Notes ("
       << t.notes.size() << ")</summary><ul class=\"note\">";
    for (const auto& n : t.notes) os << "<li>" << esc(n) << "</li>";
    os << "</ul></details>\n";
  }
  for (const auto& rt : t.tables)
    if (rt.table) plan_section(os, rt);
  os << "</section>\n";
}

}  // namespace

std::string report_html(const BuildResult& r, const std::string& base) {
  std::ostringstream os;
  os << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<title>qforge build report</title>\n<style>"
     << kStyle << "</style>\n</head>\n<body>\n<h1>qforge build report</h1>\n";
  std::set<std::string> models;
  size_t failed_n = 0;
  for (const auto& t : r.targets) models.insert(t.model), failed_n += failed(t);
  os << "<p class=\"muted\">" << r.targets.size() << " target" << (r.targets.size() == 1 ? "" : "s") << " of "
     << models.size() << " model" << (models.size() == 1 ? "" : "s");
  if (failed_n) os << ", " << failed_n << " failed";
  os << ". report.json has every value, and every step of the build.</p>\n";

  // Charts: per model, the targets with both a size and a fidelity.
  std::map<std::string, std::vector<Point>> by_model;
  std::vector<size_t> without;
  for (size_t i = 0; i < r.targets.size(); ++i) {
    const auto& t = r.targets[i];
    double y = 0;
    if (!failed(t) && t.bytes > 0 && fidelity_of(t, &y))
      by_model[t.model].push_back({i, t.bits_per_weight, y});
    else
      without.push_back(i);
  }
  std::set<size_t> on_front;
  os << "<h2>Size against fidelity</h2>\n";
  if (by_model.empty())
    os << "<p class=\"muted\">No target has a fidelity measurement: add an <code>evaluate</code> step to a "
          "target's pipeline to see it here.</p>\n";
  else
    os << "<p class=\"muted\">One chart per model: each target's bits per weight against the cosine "
          "similarity of "
          "its worst output with the model as imported (its evaluate step).</p>\n";
  for (auto& [model, pts] : by_model) {
    std::vector<Point> marked = pts;
    mark_front(marked);
    for (const auto& p : marked)
      if (p.front) on_front.insert(p.target);
    chart(os, r, model, pts);
  }
  if (!by_model.empty()) legend(os);
  if (!without.empty()) {
    os << "<div class=\"nofid\"><h4>Targets without a fidelity measurement</h4><ul>";
    for (size_t i : without) {
      const auto& t = r.targets[i];
      os << "<li data-target=\"" << esc(t.name) << "\"><a href=\"#" << target_id(i) << "\">" << esc(t.name)
         << "</a> <span class=\"muted\">(" << esc(t.model) << ", " << esc(t.format);
      if (failed(t))
        os << ", " << esc(t.status);
      else
        os << ", " << esc(human_bytes(t.bytes)) << ", " << fmt_num(t.bits_per_weight, "%.2f") << " bpw";
      os << ")</span></li>";
    }
    os << "</ul></div>\n";
  }

  os << "<h2>Targets</h2>\n<table class=\"sortable overview\"><thead><tr><th>target</th><th>model</th>"
        "<th>profile</th><th>format</th><th>size</th><th>bits/weight</th><th>cosine</th><th>SQNR dB</th>"
        "<th>status</th></tr></thead><tbody>\n";
  for (size_t i = 0; i < r.targets.size(); ++i) {
    const auto& t = r.targets[i];
    os << "<tr><td><a href=\"#" << target_id(i) << "\">" << esc(t.name) << "</a></td><td>" << esc(t.model)
       << "</td><td>" << esc(t.profile.empty() ? "-" : t.profile) << "</td><td>" << esc(t.format) << "</td>";
    os << "<td class=\"n\" data-v=\"" << t.bytes << "\">" << esc(human_bytes(t.bytes)) << "</td>";
    os << "<td class=\"n\" data-v=\"" << attr_num(t.bits_per_weight) << "\">"
       << fmt_num(t.bits_per_weight, "%.2f") << "</td>";
    for (const char* m : {"cosine", "sqnr_db"}) {
      auto it = t.metrics.find(m);
      if (it == t.metrics.end())
        os << "<td>-</td>";
      else
        os << "<td class=\"n\" data-v=\"" << attr_num(it->second) << "\">" << esc(metric_cell(m, it->second))
           << "</td>";
    }
    os << "<td><span class=\"badge " << esc(t.status) << "\">" << esc(t.status) << "</span></td></tr>\n";
  }
  os << "</tbody></table>\n";

  for (size_t i = 0; i < r.targets.size(); ++i) target_section(os, r, i, on_front.count(i) > 0, base);
  os << "<script>" << kScript << "</script>\n</body>\n</html>\n";
  return os.str();
}

}  // namespace qforge
