// `qforge run` and `qforge compare` (docs/manifest.md, "Command line"): run a
// model through an executor on a dataset directory.
#include "run_cmd.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "qforge/dataset.h"
#include "qforge/fidelity.h"
#include "qforge/graph.h"

namespace fs = std::filesystem;

namespace qforge::cli {

namespace {

using Json = nlohmann::ordered_json;

// numpy's dtype string for a run value ("<f4").
std::string npy_descr(ElemType t, const std::string& what) {
  switch (t) {
    case ElemType::F32: return "<f4";
    case ElemType::F64: return "<f8";
    case ElemType::F16: return "<f2";
    case ElemType::I8: return "|i1";
    case ElemType::U8: return "|u1";
    case ElemType::I16: return "<i2";
    case ElemType::U16: return "<u2";
    case ElemType::I32: return "<i4";
    case ElemType::U32: return "<u4";
    case ElemType::I64: return "<i8";
    case ElemType::U64: return "<u8";
    case ElemType::Bool: return "|b1";
    default:
      throw Error(what + ": element type " + std::string(name_of(t)) +
                  " has no .npy equivalent (cast it to float32 in the model to write it)");
  }
}

void write_npy(const std::string& path, const RunValue& v) {
  std::string shape = "(";
  for (size_t i = 0; i < v.shape.size(); ++i)
    shape += std::to_string(v.shape[i]) + (v.shape.size() == 1 ? "," : (i + 1 < v.shape.size() ? ", " : ""));
  shape += ")";
  std::string header =
      "{'descr': '" + npy_descr(v.type, path) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  // Magic (6) + version (2) + length (2) + header + newline, padded to 64.
  const size_t total = (10 + header.size() + 1 + 63) / 64 * 64;
  header.append(total - 10 - header.size() - 1, ' ');
  header += '\n';
  std::ofstream f(path, std::ios::binary);
  if (!f) throw Error(path + ": cannot write: " + std::strerror(errno));
  const char magic[8] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  f.write(magic, 8);
  const uint16_t len = static_cast<uint16_t>(header.size());
  const char lenb[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(lenb, 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  f.write(reinterpret_cast<const char*>(v.data->data()),
          static_cast<std::streamsize>(v.numel() * traits(v.type).type_size));
  if (!f) throw Error(path + ": write failed: " + std::strerror(errno));
}

// A sample's name: the file's stem, or the test-data directory's name.
std::string sample_name(const std::string& file) {
  fs::path p(file);
  if (fs::is_directory(p)) return p.filename().string();
  return p.stem().string();
}

// The inputs of sample `i` by model input name (dataset.h, bind_sample).
NamedValues sample_inputs(const Dataset& ds, size_t i, const PreparedModel& pm) {
  return bind_sample(ds.load(i), ds.input, pm.input_shapes());
}

std::unique_ptr<PreparedModel> prepare(const Registry& reg, const Executor& ex, const Model& m, int threads,
                                       bool profile) {
  ExecOptions o;
  o.threads = threads;
  o.profile = profile;
  std::unique_ptr<PreparedModel> pm;
  Status st = ex.prepare(m, o, pm);
  (void)reg;
  if (!st.ok) throw Error(m.source + ": " + st.message);
  return pm;
}

const Executor& executor_named(const Registry& reg, const std::string& name) {
  const Executor* e = reg.executor(name);
  if (!e) {
    std::string known;
    for (const auto* x : reg.executors()) known += (known.empty() ? "" : ", ") + x->name();
    throw Error("no executor named '" + name + "' (registered: " + (known.empty() ? "none" : known) + ")");
  }
  return *e;
}

}  // namespace

int cmd_run(const Registry& reg, const Model& model, const RunArgs& a) {
  const Executor& ex = executor_named(reg, a.executor);
  auto pm = prepare(reg, ex, model, a.threads, a.profile);
  Dataset ds = dataset_from_dir(a.data);
  fs::create_directories(a.out);
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < ds.size(); ++i) {
    NamedValues in = sample_inputs(ds, i, *pm), out;
    Status st = pm->run(in, out);
    if (!st.ok) throw Error(ds.files[i] + ": " + st.message);
    const std::string name = sample_name(ds.files[i]);
    for (size_t k = 0; k < out.size(); ++k)
      write_npy((fs::path(a.out) / (name + "_" + std::to_string(k) + ".npy")).string(), out[k].second);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // "run_seconds": the time spent on samples after loading (bench/executor/run.sh reads it).
  std::printf("ran %zu samples through %s in %.3f s (run_seconds %.6f); outputs in %s\n", ds.size(),
              model.source.c_str(), secs, secs, a.out.c_str());
  if (a.profile) std::printf("\n%s", pm->profile_report().c_str());
  return 0;
}

int cmd_compare(const Registry& reg, const Model& ref, const Model& cand, const CompareArgs& a) {
  const Executor& ex = executor_named(reg, a.executor);
  auto pr = prepare(reg, ex, ref, a.threads, false);
  auto pc = prepare(reg, ex, cand, a.threads, false);
  if (pr->output_names().size() != pc->output_names().size())
    throw Error(cand.source + " has " + std::to_string(pc->output_names().size()) + " outputs, " +
                ref.source + " has " + std::to_string(pr->output_names().size()) +
                ": they cannot be compared output by output");
  Dataset ds = dataset_from_dir(a.data);
  Fidelity fid(pr->output_names());
  for (size_t i = 0; i < ds.size(); ++i) {
    NamedValues in = sample_inputs(ds, i, *pr), ro, co;
    Status st = pr->run(in, ro);
    if (!st.ok) throw Error(ds.files[i] + ": " + ref.source + ": " + st.message);
    st = pc->run(sample_inputs(ds, i, *pc), co);
    if (!st.ok) throw Error(ds.files[i] + ": " + cand.source + ": " + st.message);
    fid.add(ro, co, ds.files[i]);
  }
  Json j;
  j["reference"] = ref.source;
  j["candidate"] = cand.source;
  j["samples"] = ds.size();
  Json outs = Json::array();
  if (!a.json)
    std::printf("%s vs %s over %zu samples\n%-24s %12s %10s %14s %10s\n", cand.source.c_str(),
                ref.source.c_str(), ds.size(), "output", "cosine", "sqnr_db", "max_abs_err", "argmax");
  for (const auto& [name, f] : fid.stats()) {
    if (a.json) {
      Json o;
      o["name"] = name;
      o["cosine"] = f.cosine;
      o["sqnr_db"] = std::isinf(f.sqnr_db) ? Json(nullptr) : Json(f.sqnr_db);
      o["max_abs_error"] = f.max_abs_err;
      o["argmax_agreement"] = f.argmax_agreement;
      o["rows"] = f.rows;
      outs.push_back(o);
    } else {
      char sqnr[32] = "inf";
      if (!std::isinf(f.sqnr_db)) std::snprintf(sqnr, sizeof sqnr, "%.2f", f.sqnr_db);
      std::printf("%-24s %12.8f %10s %14.6g %9.2f%%\n", name.c_str(), f.cosine, sqnr, f.max_abs_err,
                  100 * f.argmax_agreement);
    }
  }
  if (a.json) {
    j["outputs"] = outs;
    std::cout << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace qforge::cli
