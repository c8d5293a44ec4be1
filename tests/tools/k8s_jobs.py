#!/usr/bin/env python3
"""Checks and runs the Jobs `qforge export k8s` writes (tests/fanout_test.cc).

  k8s_jobs.py validate JOBS.yaml
  k8s_jobs.py run JOBS.yaml --qforge BIN --dir DIR

validate: reads every YAML document (PyYAML), converts it to JSON and
validates it with jsonschema against the Kubernetes batch/v1 Job schema that
the kubernetes-validate package ships (its copy of the yannh/kubernetes-json-schema
"v1.37.0-local-strict" schemas: strict, so an unknown field is an error).
Prints one line per Job ("valid: Job NAME") or the errors; exit 1 if any
document is invalid.

run: runs the containers' commands here, in order, as Kubernetes would after
the documented `kubectl wait`: first every Job that is not Indexed, then
each index I of an Indexed Job (completions times, I from 0) with
$(JOB_COMPLETION_INDEX) replaced by I. The command `qforge` is BIN; the
working directory is DIR (joined with the container's workingDir, if any);
the container's env is added to this environment. After each command, DIR's
dist/report.json is copied to DIR/k8s-reports/NN.json (NN the run's
position). Exit 1 when a command fails.
"""
import json
import os
import shutil
import subprocess
import sys

import jsonschema
import kubernetes_validate
import referencing
import yaml
from importlib import resources

SCHEMA_VERSION = "v1.37.0-local-strict"


def schema_registry():
    root = resources.files(kubernetes_validate) / "kubernetes-json-schema" / SCHEMA_VERSION
    job = json.loads((root / "job-batch-v1.json").read_text())
    defs = json.loads((root / "_definitions.json").read_text())
    registry = referencing.Registry().with_resources(
        [(defs["$id"], referencing.Resource.from_contents(defs)), (job["$id"], referencing.Resource.from_contents(job))]
    )
    return job, registry


def documents(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    # As JSON, what the API server receives.
    return [json.loads(json.dumps(d)) for d in docs]


def validate(path):
    job, registry = schema_registry()
    validator = jsonschema.Draft202012Validator(job, registry=registry)
    docs = documents(path)
    bad = 0
    for d in docs:
        name = (d.get("metadata") or {}).get("name", "?")
        if d.get("kind") != "Job":
            print(f"invalid: {name}: kind {d.get('kind')!r}, expected Job")
            bad += 1
            continue
        errors = sorted(validator.iter_errors(d), key=lambda e: list(e.absolute_path))
        for e in errors:
            print(f"invalid: Job {name}: /{'/'.join(str(p) for p in e.absolute_path)}: {e.message}")
        bad += bool(errors)
        if not errors:
            print(f"valid: Job {name}")
    if not docs:
        print("invalid: no document")
        return 1
    return 1 if bad else 0


def run(path, qforge, workdir):
    docs = documents(path)
    ordered = [d for d in docs if d["spec"].get("completionMode") != "Indexed"]
    ordered += [d for d in docs if d["spec"].get("completionMode") == "Indexed"]
    reports = os.path.join(workdir, "k8s-reports")
    os.makedirs(reports, exist_ok=True)
    n = 0
    for d in ordered:
        spec = d["spec"]
        indices = range(spec["completions"]) if spec.get("completionMode") == "Indexed" else [None]
        (container,) = spec["template"]["spec"]["containers"]
        for i in indices:
            argv = container["command"] + container.get("args", [])
            if i is not None:
                argv = [a.replace("$(JOB_COMPLETION_INDEX)", str(i)) for a in argv]
            argv = [qforge if k == 0 and a == "qforge" else a for k, a in enumerate(argv)]
            env = dict(os.environ)
            for e in container.get("env", []):
                env[e["name"]] = e["value"]
            cwd = os.path.join(workdir, container.get("workingDir", "."))
            print("run:", " ".join(argv), flush=True)
            r = subprocess.run(argv, cwd=cwd, env=env)
            if r.returncode != 0:
                print(f"failed: {' '.join(argv)}: exit status {r.returncode}")
                return 1
            report = os.path.join(cwd, "dist", "report.json")
            if os.path.exists(report):
                shutil.copy(report, os.path.join(reports, f"{n:02d}.json"))
            n += 1
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "validate":
        return validate(argv[2])
    if len(argv) == 7 and argv[1] == "run" and argv[3] == "--qforge" and argv[5] == "--dir":
        return run(argv[2], argv[4], argv[6])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
