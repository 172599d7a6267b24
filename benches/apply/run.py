#!/usr/bin/env python3
"""Apply and diff speed: berth apply / berth diff -f vs kubectl apply --server-side / kubectl diff,
on the same folder of manifests against the same berth server.

Usage: python3 benches/apply/run.py [OBJECTS] [RUNS]   (from the repository root)

Builds berth in release mode (unless BERTH_BIN names a binary), starts one `berth server` in a
temp dir, writes a folder of OBJECTS (default 1,000) manifests (ConfigMaps, Deployments,
Services, Secrets in a 5:2:2:1 mix), then times on that server, each tool in its own namespace:
  - the first apply (1 run);
  - a no-op re-apply (RUNS runs, default 5, median);
  - a change to 10 objects, then its apply (RUNS runs, a new change each time, median);
  - a diff of the folder with 10 objects changed (RUNS runs, median).
Prints a Markdown table for BENCHMARKS.md.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OBJECTS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 5


def manifest(i, round_):
    """Object i of the folder; objects 0..9 change with each round."""
    value = f"round-{round_}" if i < 10 else "steady"
    kind = i % 10
    if kind < 5:
        return (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  labels:\n    app: bench\n"
                f"data:\n  value: {value}\n  index: \"{i}\"\n")
    if kind < 7:
        return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web-{i}\n  labels:\n    app: web-{i}\n"
                f"  annotations:\n    bench/value: {value}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n"
                f"      app: web-{i}\n  template:\n    metadata:\n      labels:\n        app: web-{i}\n    spec:\n"
                f"      containers:\n      - name: web\n        image: berth-test/busybox:1.36\n"
                f"        command: [\"httpd\", \"-f\", \"-p\", \"8080\"]\n        ports:\n        - containerPort: 8080\n"
                f"        env:\n        - name: VALUE\n          value: {value}\n")
    if kind < 9:
        return (f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\n  annotations:\n    bench/value: {value}\n"
                f"spec:\n  selector:\n    app: web-{i}\n  ports:\n  - port: 80\n    targetPort: 8080\n")
    return (f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: secret-{i}\ntype: Opaque\n"
            f"stringData:\n  password: {value}-{i}\n")


def write_folder(folder, round_):
    os.makedirs(folder, exist_ok=True)
    for i in range(OBJECTS):
        path = os.path.join(folder, f"{i:05}.yaml")
        text = manifest(i, round_)
        if round_ == 0 or i < 10:
            with open(path, "w") as f:
                f.write(text)


def run(cmd, env, ok=(0,)):
    start = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if r.returncode not in ok:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()[-2000:]}")
    return elapsed


def start_server(berth, data_dir):
    proc = subprocess.Popen([berth, "server", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc
    sys.exit("berth server did not start")


def main():
    berth = os.environ.get("BERTH_BIN")
    if not berth:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        berth = os.path.join(ROOT, "target", "release", "berth")
    work = tempfile.mkdtemp(prefix="berth-apply-bench")
    server = start_server(berth, os.path.join(work, "data"))
    try:
        env = dict(os.environ, KUBECONFIG=os.path.join(work, "data", "kubeconfig.yaml"), HOME=work)
        for ns in ["berth-bench", "kubectl-bench"]:
            run(["kubectl", "create", "namespace", ns], env)
        folder = os.path.join(work, "manifests")
        write_folder(folder, 0)
        tools = {
            "berth": {
                "apply": [berth, "apply", "-f", folder, "-n", "berth-bench"],
                "diff": [berth, "diff", "-f", folder, "-n", "berth-bench"],
            },
            "kubectl": {
                "apply": ["kubectl", "apply", "--server-side", "--field-manager", "bench",
                          "-f", folder, "-n", "kubectl-bench"],
                "diff": ["kubectl", "diff", "--server-side", "--field-manager", "bench",
                         "-f", folder, "-n", "kubectl-bench"],
            },
        }
        results = {}
        round_ = 0
        for tool, cmds in tools.items():
            write_folder(folder, round_)
            first = run(cmds["apply"], env)
            noop = statistics.median(run(cmds["apply"], env) for _ in range(RUNS))
            changes, diffs = [], []
            for _ in range(RUNS):
                round_ += 1
                write_folder(folder, round_)
                diffs.append(run(cmds["diff"], env, ok=(1,)))
                changes.append(run(cmds["apply"], env))
            results[tool] = (first, noop, statistics.median(changes), statistics.median(diffs))
        print(f"\n{OBJECTS} objects, {RUNS} runs (medians), one berth server, {os.cpu_count()} cores\n")
        print("| step | berth | kubectl | kubectl / berth |")
        print("|---|---|---|---|")
        names = ["first apply", "no-op re-apply", "apply of 10 changed objects", "diff (10 changed)"]
        for i, name in enumerate(names):
            b, k = results["berth"][i], results["kubectl"][i]
            print(f"| {name} | {b:.3f} s | {k:.3f} s | {k / b:.1f}x |")
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
