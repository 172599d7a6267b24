#!/usr/bin/env python3
"""GitOps at scale (issue 23): a repository of many ConfigMaps synced by a GitSource, against
`berth apply -f` of the same folder as the reference, in the same run.

Usage: python3 benches/gitops/scale.py [OBJECTS ...] [--runs N]   (from the repository root)
       default: 5000 20000, 5 runs of each timed commit

Builds berth in release mode (unless BERTH_BIN names a binary). For each size it writes a
repository of OBJECTS ConfigMaps (one file each, ~200 bytes of data, 500 files a folder) and
measures, each on a fresh `berth server` (its own data dir):

  GitSource (server A):
    - idle RSS (VmRSS) before the GitSource exists;
    - first sync: creating the GitSource until `status.lastAppliedCommit` names HEAD;
    - one-line commit -> applied: `git commit` of one changed ConfigMap until the API serves
      the new value (RUNS runs, median);
    - 500-object commit -> applied: `git commit` changing 500 ConfigMaps until
      `status.lastAppliedCommit` names it (RUNS runs, median);
    - peak RSS (VmHWM) over all of it, and settled RSS (VmRSS) 10 s after the last commit;
    - the GitSource object's size as the API serves it (JSON bytes).
  `berth apply -f` (server B, the reference):
    - idle RSS, first apply, no-op re-apply, one-line change re-apply (median of RUNS),
      500-object change re-apply (median), peak RSS.

Prints one Markdown table per size for BENCHMARKS.md.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOG = os.environ.get("BERTH_LOG", os.devnull)
PER_FOLDER = 500
SOURCE = "/apis/berth.dev/v1/namespaces/default/gitsources/bench"


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

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path):
        code, body = self.call("GET", path)
        return json.loads(body) if code == 200 else None


def config_map(i, version):
    # ~200 bytes of data per object.
    value = f"{version}-{i}-" + "x" * 160
    return (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i:06}\n"
            f"data:\n  value: \"{value}\"\n  index: \"{i}\"\n")


def path_of(folder, i):
    return os.path.join(folder, f"part-{i // PER_FOLDER:04}", f"cm-{i:06}.yaml")


def write_all(folder, count, version):
    for i in range(count):
        p = path_of(folder, i)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(config_map(i, version))


def rewrite(folder, indices, version):
    for i in indices:
        with open(path_of(folder, i), "w") as f:
            f.write(config_map(i, version))


def status_line(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def wait(probe, timeout=600, what="condition"):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if probe():
            return time.perf_counter()
        time.sleep(0.005)
    sys.exit(f"timed out waiting for {what}")


def start_server(berth, data_dir):
    proc = subprocess.Popen([berth, "server", "--listen", "127.0.0.1:0", "--insecure-http",
                             "--data-dir", data_dir],
                            stdout=subprocess.PIPE, stderr=open(LOG, "a"), text=True)
    for line in proc.stdout:
        if line.startswith("listening on "):
            url = line.split()[-1]
            token = open(os.path.join(data_dir, "tokens", "admin")).read().strip()
            return proc, Api(url, token)
    sys.exit("berth server did not start")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def settle_idle(pid, seconds=3.0):
    """Waits for the server to go quiet after start; returns its RSS then."""
    time.sleep(seconds)
    return status_line(pid, "VmRSS")


def served_value(api, i):
    o = api.get(f"/api/v1/namespaces/default/configmaps/cm-{i:06}")
    return None if o is None else o.get("data", {}).get("value")


def gitops(berth, work, count, runs):
    repo = os.path.join(work, "repo")
    os.makedirs(repo)
    git(repo, "init", "-q")
    write_all(repo, count, "v0")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "start")
    proc, api = start_server(berth, os.path.join(work, "data-git"))
    try:
        idle = settle_idle(proc.pid)
        start = time.perf_counter()
        code, body = api.call("POST", "/apis/berth.dev/v1/namespaces/default/gitsources",
                              {"apiVersion": "berth.dev/v1", "kind": "GitSource",
                               "metadata": {"name": "bench"},
                               "spec": {"url": repo, "interval": "1h"}})
        if code != 201:
            sys.exit(f"creating the GitSource answered {code}: {body[:500]}")
        first_commit = head(repo)

        def synced(commit):
            def probe():
                s = api.get(SOURCE)
                return s is not None and (s.get("status") or {}).get("lastAppliedCommit") == commit
            return probe

        first = wait(synced(first_commit), what="the first sync") - start
        one_line = []
        for run in range(runs):
            i = (run * 7919) % count
            version = f"one-{run}"
            rewrite(repo, [i], version)
            git(repo, "add", "-A")
            start = time.perf_counter()
            git(repo, "commit", "-q", "-m", f"one line {run}")
            want = config_map(i, version).split('value: "')[1].split('"')[0]
            done = wait(lambda: served_value(api, i) == want, what="a one-line commit")
            one_line.append(done - start)
            wait(synced(head(repo)), what="the one-line commit recorded")
        bulk = []
        for run in range(runs):
            indices = [(run * 500 + k * 37) % count for k in range(500)]
            rewrite(repo, indices, f"bulk-{run}")
            git(repo, "add", "-A")
            start = time.perf_counter()
            git(repo, "commit", "-q", "-m", f"500 objects {run}")
            commit = head(repo)
            bulk.append(wait(synced(commit), what="a 500-object commit") - start)
        time.sleep(10)
        peak = status_line(proc.pid, "VmHWM")
        settled = status_line(proc.pid, "VmRSS")
        code, body = api.call("GET", SOURCE)
        size = len(body)
        source = json.loads(body)
        problems = [c for c in (source.get("status") or {}).get("conditions", [])
                    if c.get("status") != "True" and c.get("type") == "Ready"]
        if problems:
            sys.exit(f"the GitSource is not Ready: {problems}")
        return {"idle": idle, "first": first, "one": statistics.median(one_line),
                "one_all": one_line, "bulk": statistics.median(bulk), "bulk_all": bulk,
                "peak": peak, "settled": settled, "size": size}
    finally:
        stop(proc)


def reference(berth, work, count, runs):
    folder = os.path.join(work, "folder")
    write_all(folder, count, "v0")
    data = os.path.join(work, "data-apply")
    proc, api = start_server(berth, data)
    env = dict(os.environ, KUBECONFIG=os.path.join(data, "kubeconfig.yaml"), HOME=work)

    def apply():
        start = time.perf_counter()
        r = subprocess.run([berth, "apply", "-f", folder], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if r.returncode != 0:
            sys.exit(f"berth apply failed: {r.stderr.decode()[-2000:]}")
        return time.perf_counter() - start

    try:
        idle = settle_idle(proc.pid)
        first = apply()
        noop = statistics.median(apply() for _ in range(runs))
        one = []
        for run in range(runs):
            rewrite(folder, [(run * 7919) % count], f"one-{run}")
            one.append(apply())
        bulk = []
        for run in range(runs):
            rewrite(folder, [(run * 500 + k * 37) % count for k in range(500)], f"bulk-{run}")
            bulk.append(apply())
        time.sleep(10)
        return {"idle": idle, "first": first, "noop": noop, "one": statistics.median(one),
                "bulk": statistics.median(bulk), "peak": status_line(proc.pid, "VmHWM"),
                "settled": status_line(proc.pid, "VmRSS")}
    finally:
        stop(proc)


def main():
    args = sys.argv[1:]
    runs = 5
    if "--runs" in args:
        at = args.index("--runs")
        runs = int(args[at + 1])
        del args[at:at + 2]
    sizes = [int(a) for a in args] or [5000, 20000]
    berth = os.environ.get("BERTH_BIN")
    if not berth:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        berth = os.path.join(ROOT, "target", "release", "berth")
    load = os.getloadavg()
    print(f"{berth}; {os.cpu_count()} cores; load average {load[0]:.1f}; {runs} runs a step")
    for count in sizes:
        work = tempfile.mkdtemp(prefix="berth-gitops-scale")
        try:
            g = gitops(berth, work, count, runs)
            r = reference(berth, work, count, runs)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"\n{count} ConfigMaps (medians of {runs}; raw: one-line {['%.3f' % x for x in g['one_all']]}, "
              f"500 {['%.3f' % x for x in g['bulk_all']]})\n")
        print("| step | GitSource | `berth apply -f` | GitSource / apply |")
        print("|---|---|---|---|")
        print(f"| first sync / first apply | {g['first']:.2f} s | {r['first']:.2f} s | "
              f"{g['first'] / r['first']:.2f} |")
        print(f"| one-line commit → applied / one-line re-apply | {g['one'] * 1000:.0f} ms | "
              f"{r['one'] * 1000:.0f} ms | {g['one'] / r['one']:.2f} |")
        print(f"| 500-object commit → applied / re-apply | {g['bulk'] * 1000:.0f} ms | "
              f"{r['bulk'] * 1000:.0f} ms | {g['bulk'] / r['bulk']:.2f} |")
        print(f"| no-op re-apply | — | {r['noop'] * 1000:.0f} ms | |")
        print(f"| idle RSS | {g['idle']:.0f} MiB | {r['idle']:.0f} MiB | |")
        print(f"| peak RSS (VmHWM) | {g['peak']:.0f} MiB (+{g['peak'] - g['idle']:.0f}) | "
              f"{r['peak']:.0f} MiB (+{r['peak'] - r['idle']:.0f}) | |")
        print(f"| settled RSS 10 s after | {g['settled']:.0f} MiB ({g['settled'] / g['idle']:.2f}× idle) | "
              f"{r['settled']:.0f} MiB ({r['settled'] / r['idle']:.2f}× idle) | |")
        print(f"| GitSource object | {g['size'] / 1024:.1f} KiB | | |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
