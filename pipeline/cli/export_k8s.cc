// `qforge export k8s` (docs/scale.md, "Sharding and Kubernetes"): the YAML is
// made with yaml-cpp's emitter, one document per Job.
#include "export_k8s.h"

#include <yaml-cpp/yaml.h>

#include <regex>

#include "qforge/status.h"

namespace qforge::cli {

namespace {

// A DNS-1123 label: what Kubernetes accepts as a Job name or a namespace.
bool dns_label(const std::string& s, size_t max) {
  static const std::regex re("[a-z0-9]([-a-z0-9]*[a-z0-9])?");
  return !s.empty() && s.size() <= max && std::regex_match(s, re);
}

void comment_lines(YAML::Emitter& out, const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& l : lines) text += (text.empty() ? "" : "\n") + l;
  out << YAML::Comment(text) << YAML::Newline;
}

void labels(YAML::Emitter& out, const K8sArgs& a, const std::string& component) {
  out << YAML::Key << "labels" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "app.kubernetes.io/name" << YAML::Value << "qforge";
  out << YAML::Key << "app.kubernetes.io/instance" << YAML::Value << a.name;
  out << YAML::Key << "app.kubernetes.io/component" << YAML::Value << component;
  out << YAML::EndMap;
}

// One Job whose single container runs `qforge ARGS`.
void job(YAML::Emitter& out, const K8sArgs& a, const std::string& component,
         const std::vector<std::string>& args, bool indexed, int completions, int parallelism) {
  out << YAML::BeginDoc << YAML::BeginMap;
  out << YAML::Key << "apiVersion" << YAML::Value << "batch/v1";
  out << YAML::Key << "kind" << YAML::Value << "Job";
  out << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << a.name + "-" + component;
  if (!a.ns.empty()) out << YAML::Key << "namespace" << YAML::Value << a.ns;
  labels(out, a, component);
  out << YAML::EndMap;
  out << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
  if (indexed) {
    out << YAML::Key << "completionMode" << YAML::Value << "Indexed";
    out << YAML::Key << "completions" << YAML::Value << completions;
    out << YAML::Key << "parallelism" << YAML::Value << parallelism;
  }
  // A build that fails fails again on the same inputs: no retries.
  out << YAML::Key << "backoffLimit" << YAML::Value << 0;
  out << YAML::Key << "template" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "metadata" << YAML::Value << YAML::BeginMap;
  labels(out, a, component);
  out << YAML::EndMap;
  out << YAML::Key << "spec" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "restartPolicy" << YAML::Value << "Never";
  out << YAML::Key << "containers" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << "qforge";
  out << YAML::Key << "image" << YAML::Value << a.image;
  if (!a.workdir.empty()) out << YAML::Key << "workingDir" << YAML::Value << a.workdir;
  out << YAML::Key << "command" << YAML::Value << YAML::Flow << YAML::BeginSeq << "qforge" << YAML::EndSeq;
  out << YAML::Key << "args" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const auto& x : args) out << YAML::DoubleQuoted << x;
  out << YAML::EndSeq;
  if (!a.remote_cache.empty()) {
    out << YAML::Key << "env" << YAML::Value << YAML::BeginSeq << YAML::BeginMap;
    out << YAML::Key << "name" << YAML::Value << "QFORGE_REMOTE_CACHE";
    out << YAML::Key << "value" << YAML::Value << YAML::DoubleQuoted << a.remote_cache;
    out << YAML::EndMap << YAML::EndSeq;
  }
  out << YAML::EndMap << YAML::EndSeq;  // containers
  out << YAML::EndMap;                  // pod spec
  out << YAML::EndMap;                  // template
  out << YAML::EndMap;                  // job spec
  out << YAML::EndMap;
}

}  // namespace

std::vector<std::string> check_k8s_args(const K8sArgs& a) {
  std::vector<std::string> problems;
  // The longer Job name, "<name>-shared", must be a DNS label of at most 63 characters.
  if (!dns_label(a.name, 63 - 7))
    problems.push_back(
        "--name '" + a.name +
        "': Kubernetes names are lower-case letters, digits and '-', starting and ending with a "
        "letter or digit, at most 56 characters here (the Jobs are <name>-shared and "
        "<name>-shards)");
  if (!a.ns.empty() && !dns_label(a.ns, 63))
    problems.push_back(
        "--namespace '" + a.ns +
        "': a namespace is lower-case letters, digits and '-', starting and ending with a letter "
        "or digit, at most 63 characters");
  if (a.image.empty())
    problems.push_back(
        "--image: the container image is required (one with qforge and the "
        "manifest's files at its working directory)");
  return problems;
}

std::string k8s_yaml(const K8sArgs& a, size_t shared_steps, size_t targets) {
  const std::string file = "FILE";  // what the user names the YAML
  const std::string ns = a.ns.empty() ? "" : " -n " + a.ns;
  const std::string n = std::to_string(a.shards);
  YAML::Emitter out;
  out.SetIndent(2);
  comment_lines(
      out,
      {"Made by `qforge export k8s -f " + a.manifest + "`: " + std::to_string(targets) + " target(s), " +
           std::to_string(shared_steps) + " shared step(s), " + n + " shard(s).",
       "Kubernetes has no dependency between Jobs. Apply the shared Job, wait for it, then the indexed one",
       "(FILE is this file; the `-l` selector picks one Job of the two):",
       "  kubectl apply" + ns + " -f " + file + " -l app.kubernetes.io/component=shared",
       "  kubectl wait" + ns + " --for=condition=complete --timeout=24h job/" + a.name + "-shared",
       "  kubectl apply" + ns + " -f " + file + " -l app.kubernetes.io/component=shards",
       "  kubectl wait" + ns + " --for=condition=complete --timeout=24h job/" + a.name + "-shards",
       "Applying both at once also builds correctly (a shard builds the shared steps it needs when the cache",
       "does not have them yet), but then shards may compute the same shared step at the same time.",
       a.remote_cache.empty() ? "No --remote-cache: the pods share results only if the manifest's cache "
                                "directory is a shared volume."
                              : "The pods share results through the remote cache (QFORGE_REMOTE_CACHE)."});
  std::vector<std::string> shared_args = {"build", "-f", a.manifest}, shard_args = shared_args;
  for (const auto& t : a.targets) {
    for (auto* v : {&shared_args, &shard_args}) {
      v->push_back("--target");
      v->push_back(t);
    }
  }
  shared_args.push_back("--shared-only");
  shard_args.push_back("--shard");
  shard_args.push_back("$(JOB_COMPLETION_INDEX)/" + n);
  job(out, a, "shared", shared_args, false, 0, 0);
  out << YAML::Newline;
  comment_lines(out, {"Pod I (JOB_COMPLETION_INDEX, from 0) builds share I of " + n +
                      " of the targets: `qforge build --shard I/" + n + "`."});
  job(out, a, "shards", shard_args, true, a.shards, a.parallelism > 0 ? a.parallelism : a.shards);
  if (!out.good()) throw Error("export k8s: writing the YAML: " + out.GetLastError());
  return std::string(out.c_str()) + "\n";
}

}  // namespace qforge::cli
