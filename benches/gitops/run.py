#!/usr/bin/env python3
"""GitOps speed: how soon a commit is running configuration.

Usage: python3 benches/gitops/run.py [RUNS] [OBJECTS]   (from the repository root)

Builds berth in release mode (unless BERTH_BIN names a binary), makes a git repository with a
working tree, starts one `berth server --git WORKTREE` in a temp dir, and measures:
  - commit to applied: `git commit` in the watched repository until the API serves the new
    object (notify wake-up, fetch, validate, one-transaction apply), RUNS runs, median;
  - webhook to applied: a second GitSource follows the same commits over git:// (`git daemon`
    on loopback, so no file watch helps it; poll interval 1 h); after the push, a GitHub-style
    signed `POST /hooks/git/...` until the object is served, RUNS runs, median;
  - one commit adding OBJECTS (default 500) objects (ConfigMaps, Deployments, Services in a
    3:1:1 mix): commit until `status.lastAppliedCommit` names it, and the server's peak RSS
    (VmHWM) after it.
Prints a Markdown table for BENCHMARKS.md.
"""
import hashlib
import hmac
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
OBJECTS = int(sys.argv[2]) if len(sys.argv) > 2 else 500
HOOK_SECRET = "bench-hook-secret"
LOG = os.environ.get("BERTH_LOG", os.devnull)


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=Bench", "-c", "user.email=b@example.invalid",
                    "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
                   cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def head(cwd):
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


class Api:
    def __init__(self, url, token):
        self.url, self.token = url, token

    def call(self, method, path, body=None, headers=None, auth=True):
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if auth:
            req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, None

    def get(self, path):
        code, body = self.call("GET", path)
        return body if code == 200 else None


def marker(value):
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: marker\ndata:\n  value: \"{value}\"\n"


def many(i):
    kind = i % 5
    if kind < 3:
        return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  index: \"{i}\"\n"
    if kind == 3:
        return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web-{i}\nspec:\n  replicas: 1\n"
                f"  selector:\n    matchLabels:\n      app: web-{i}\n  template:\n    metadata:\n      labels:\n"
                f"        app: web-{i}\n    spec:\n      containers:\n      - name: web\n"
                f"        image: berth-test/busybox:1.36\n")
    return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\nspec:\n  selector:\n"
            f"    app: web-{i}\n  ports:\n  - port: 80\n")


def wait(probe, timeout=60):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if probe():
            return time.perf_counter()
        time.sleep(0.005)
    sys.exit("timed out")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    berth = os.environ.get("BERTH_BIN")
    if not berth:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        berth = os.path.join(ROOT, "target", "release", "berth")
    work = tempfile.mkdtemp(prefix="berth-gitops-bench")
    repo = os.path.join(work, "repo")
    os.makedirs(repo)
    git(repo, "init", "-q")
    with open(os.path.join(repo, "marker.yaml"), "w") as f:
        f.write(marker("start"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "start")
    bare = os.path.join(work, "served", "repo.git")
    git(work, "clone", "-q", "--bare", repo, bare)
    git(repo, "remote", "add", "served", bare)
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--export-all", "--reuseaddr", f"--port={port}",
                               "--listen=127.0.0.1", f"--base-path={os.path.join(work, 'served')}",
                               os.path.join(work, "served")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = subprocess.Popen([berth, "server", "--listen", "127.0.0.1:0", "--insecure-http",
                               "--data-dir", os.path.join(work, "data"), "--git", repo],
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
                                                "metadata": {"name": "hooked"}})
        api.call("POST", "/api/v1/namespaces/hooked/secrets",
                 {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"},
                  "stringData": {"webhook-secret": HOOK_SECRET}})
        api.call("POST", "/apis/berth.dev/v1/namespaces/hooked/gitsources",
                 {"apiVersion": "berth.dev/v1", "kind": "GitSource", "metadata": {"name": "hooked"},
                  "spec": {"url": f"git://127.0.0.1:{port}/repo.git", "interval": "1h",
                           "webhookSecretRef": {"name": "hook"}}})

        def applied(namespace, name, commit):
            def probe():
                o = api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
                return o is not None and \
                    o["metadata"].get("annotations", {}).get("berth.dev/source-commit") == commit
            return probe

        wait(applied("default", "marker", head(repo)))
        wait(applied("hooked", "marker", head(repo)))

        commit_ms, hook_ms = [], []
        for i in range(RUNS):
            with open(os.path.join(repo, "marker.yaml"), "w") as f:
                f.write(marker(f"run-{i}"))
            git(repo, "add", "-A")
            start = time.perf_counter()
            git(repo, "commit", "-q", "-m", f"run {i}")
            commit = head(repo)
            done = wait(applied("default", "marker", commit))
            commit_ms.append((done - start) * 1000)

            git(repo, "push", "-q", "served", "HEAD:main")
            body = json.dumps({"ref": "refs/heads/main", "after": commit}).encode()
            signature = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
            start = time.perf_counter()
            code, _ = api.call("POST", "/hooks/git/hooked/hooked", body,
                               {"X-Hub-Signature-256": signature, "X-GitHub-Event": "push"}, auth=False)
            if code != 202:
                sys.exit(f"webhook answered {code}")
            done = wait(applied("hooked", "marker", commit))
            hook_ms.append((done - start) * 1000)
            time.sleep(0.2)

        rss_before = peak_rss_mib(server.pid)
        for i in range(OBJECTS):
            with open(os.path.join(repo, f"obj-{i:04}.yaml"), "w") as f:
                f.write(many(i))
        git(repo, "add", "-A")
        start = time.perf_counter()
        git(repo, "commit", "-q", "-m", f"{OBJECTS} objects")
        commit = head(repo)

        def synced():
            s = api.get("/apis/berth.dev/v1/namespaces/default/gitsources/default")
            return s is not None and (s.get("status") or {}).get("lastAppliedCommit") == commit
        done = wait(synced, timeout=120)
        bulk = done - start
        rss_after = peak_rss_mib(server.pid)

        print(f"\n{RUNS} runs (medians), {os.cpu_count()} cores, {berth}\n")
        print("| step | time |")
        print("|---|---|")
        print(f"| `git commit` in the watched repository → object served | "
              f"{statistics.median(commit_ms):.0f} ms (min {min(commit_ms):.0f}, max {max(commit_ms):.0f}) |")
        print(f"| signed webhook → object served (git:// fetch) | "
              f"{statistics.median(hook_ms):.0f} ms (min {min(hook_ms):.0f}, max {max(hook_ms):.0f}) |")
        print(f"| one commit adding {OBJECTS} objects → `lastAppliedCommit` | {bulk:.2f} s |")
        print(f"| server peak RSS (VmHWM) before / after the {OBJECTS}-object commit | "
              f"{rss_before:.0f} MiB / {rss_after:.0f} MiB |")
        # No reference: no other GitOps tool runs here to time against.
        print(f"RESULT gitops-commit-to-served {statistics.median(commit_ms):.0f}ms - - <2000ms")
        print(f"RESULT gitops-webhook-to-served {statistics.median(hook_ms):.0f}ms - - <2000ms")
        print(f"RESULT gitops-{OBJECTS}-objects {bulk:.2f}s - - <5s")
    finally:
        server.terminate()
        server.wait(timeout=30)
        daemon.terminate()
        daemon.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
