#!/usr/bin/env python3
"""Kustomize speed: rendering overlays, and a commit to a kustomize source until it is served.

Usage: python3 benches/kustomize/run.py [TRIALS] [OBJECTS]   (from the repository root)

Builds berth in release mode (unless BERTH_BIN names a binary) and makes a base of OBJECTS
(default 300) objects (ConfigMaps, Deployments, Services in a 3:1:1 mix) with three overlays
(dev, staging, prod: name prefix, labels, an image override, a strategic-merge patch of every
Deployment, a ConfigMap generator). Then, in one run, interleaved:
  - render: `berth kustomize overlays/X` vs `kubectl kustomize overlays/X` (the reference,
    kustomize v5 inside kubectl), each overlay TRIALS times; both outputs are parsed and must
    hold the same objects;
  - commit to applied: one `berth server` follows the repository twice, a GitSource at the
    prod overlay (rendered natively at each commit) and one at a folder holding the same
    objects already rendered (the reference: what applying plain YAML costs); a commit that
    changes one ConfigMap of the base, until the API serves the new value through each,
    TRIALS times, median.
Prints `RESULT` lines for benches/run-all and a Markdown table for BENCHMARKS.md.
"""
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRIALS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
OBJECTS = int(sys.argv[2]) if len(sys.argv) > 2 else 300
OVERLAYS = ["dev", "staging", "prod"]
LOG = os.environ.get("BERTH_LOG", os.devnull)

# The git, API and waiting helpers of the GitOps benchmark (its main() does not run on import).
_spec = importlib.util.spec_from_file_location("gitops_bench", os.path.join(ROOT, "benches", "gitops", "run.py"))
gitops = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gitops)
git, Api = gitops.git, gitops.Api


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def base_object(i, value="v0"):
    kind = i % 5
    if kind < 3:
        return (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n"
                f"data:\n  index: \"{i}\"\n  value: \"{value}\"\n")
    if kind == 3:
        return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web-{i}\nspec:\n"
                f"  replicas: 1\n  selector:\n    matchLabels:\n      app: web-{i}\n  template:\n"
                f"    metadata:\n      labels:\n        app: web-{i}\n    spec:\n      containers:\n"
                f"      - name: web\n        image: busybox:1.36\n        envFrom:\n"
                f"        - configMapRef:\n            name: cm-{i - 1}\n")
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\nspec:\n  selector:\n"
            f"    app: web-{i - 1}\n  ports:\n  - port: 80\n")


def make_tree(repo):
    names = []
    for i in range(OBJECTS):
        write(os.path.join(repo, "base", f"obj-{i:04}.yaml"), base_object(i))
        names.append(f"obj-{i:04}.yaml")
    write(os.path.join(repo, "base", "kustomization.yaml"),
          "resources:\n" + "".join(f"- {n}\n" for n in names))
    for n, overlay in enumerate(OVERLAYS):
        write(os.path.join(repo, "overlays", overlay, "replicas.yaml"),
              "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: any\n"
              f"spec:\n  replicas: {n + 2}\n")
        write(os.path.join(repo, "overlays", overlay, "kustomization.yaml"),
              f"resources:\n- ../../base\nnamePrefix: {overlay}-\n"
              f"labels:\n- pairs:\n    env: {overlay}\n  includeSelectors: false\n"
              f"images:\n- name: busybox\n  newTag: \"1.36-{overlay}\"\n"
              "patches:\n- path: replicas.yaml\n  target:\n    kind: Deployment\n"
              f"configMapGenerator:\n- name: settings\n  literals:\n  - ENV={overlay}\n")


def documents(text):
    return sorted(json.dumps(d, sort_keys=True) for d in yaml.safe_load_all(text) if d)


def timed(cmd):
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {r.stderr}")
    return elapsed * 1000, r.stdout


def wait(probe):
    return gitops.wait(probe, timeout=120)


def main():
    berth = os.environ.get("BERTH_BIN")
    if not berth:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        berth = os.path.join(ROOT, "target", "release", "berth")
    work = tempfile.mkdtemp(prefix="berth-kustomize-bench")
    try:
        repo = os.path.join(work, "repo")
        make_tree(repo)

        # Rendering, interleaved, outputs compared.
        berth_ms, kubectl_ms = [], []
        for _ in range(TRIALS):
            for overlay in OVERLAYS:
                folder = os.path.join(repo, "overlays", overlay)
                ms, ours = timed([berth, "kustomize", folder])
                berth_ms.append(ms)
                ms, theirs = timed(["kubectl", "kustomize", folder])
                kubectl_ms.append(ms)
                if documents(ours) != documents(theirs):
                    sys.exit(f"berth and kubectl render overlays/{overlay} differently")

        # The rendered prod overlay as plain files: the reference source.
        _, rendered = timed(["kubectl", "kustomize", os.path.join(repo, "overlays", "prod")])
        write(os.path.join(repo, "plain", "rendered.yaml"), rendered)
        git(repo, "init", "-q")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "start")
        server = subprocess.Popen([berth, "server", "--listen", "127.0.0.1:0", "--insecure-http",
                                   "--data-dir", os.path.join(work, "data"), "--git", repo,
                                   "--git-path", "overlays/prod"],
                                  stdout=subprocess.PIPE, stderr=open(LOG, "w"), text=True)
        try:
            url = None
            for line in server.stdout:
                if line.startswith("listening on "):
                    url = line.split()[-1]
                    break
            token = open(os.path.join(work, "data", "tokens", "admin")).read().strip()
            api = Api(url, token)
            api.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": "plain"}})
            api.call("POST", "/apis/berth.dev/v1/namespaces/plain/gitsources",
                     {"apiVersion": "berth.dev/v1", "kind": "GitSource", "metadata": {"name": "plain"},
                      "spec": {"url": repo, "path": "plain", "interval": "1h"}})

            def served(namespace, value):
                def probe():
                    o = api.get(f"/api/v1/namespaces/{namespace}/configmaps/prod-cm-0")
                    return o is not None and o["data"].get("value") == value
                return probe

            wait(served("default", "v0"))
            wait(served("plain", "v0"))
            kustomize_ms, plain_ms = [], []
            for i in range(TRIALS):
                value = f"v{i + 1}"
                write(os.path.join(repo, "base", "obj-0000.yaml"), base_object(0, value))
                git(repo, "add", "-A")
                start = time.perf_counter()
                git(repo, "commit", "-q", "-m", f"kustomize {value}")
                kustomize_ms.append((wait(served("default", value)) - start) * 1000)

                with open(os.path.join(repo, "plain", "rendered.yaml")) as f:
                    text = f.read()
                old = 'value: "v%d"' % i if i else "value: v0"
                if old not in text:
                    sys.exit(f"the rendered file holds no {old!r}")
                write(os.path.join(repo, "plain", "rendered.yaml"),
                      text.replace(old, f'value: "{value}"', 1))
                git(repo, "add", "-A")
                start = time.perf_counter()
                git(repo, "commit", "-q", "-m", f"plain {value}")
                plain_ms.append((wait(served("plain", value)) - start) * 1000)
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(xs):
        return statistics.median(xs)

    render_ratio = med(kubectl_ms) / med(berth_ms)
    print(f"RESULT kustomize-render {med(berth_ms):.0f}ms {med(kubectl_ms):.0f}ms "
          f"{render_ratio:.2f}x faster-is-better")
    print(f"RESULT kustomize-commit-to-applied {med(kustomize_ms):.0f}ms {med(plain_ms):.0f}ms "
          f"{med(kustomize_ms) / med(plain_ms):.2f}x <2000ms")
    print()
    print(f"| workload ({OBJECTS} objects, {TRIALS} trials, median) | berth | reference | ratio |")
    print("|---|---|---|---|")
    print(f"| render one overlay: `berth kustomize` vs `kubectl kustomize` | {med(berth_ms):.0f} ms "
          f"| {med(kubectl_ms):.0f} ms | {render_ratio:.2f}× faster |")
    print(f"| commit to served, kustomize source vs plain-YAML source | {med(kustomize_ms):.0f} ms "
          f"| {med(plain_ms):.0f} ms | {med(kustomize_ms) / med(plain_ms):.2f}× the time |")


if __name__ == "__main__":
    main()
