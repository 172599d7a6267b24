#!/usr/bin/env python3
"""Apply and diff speed: berth apply / berth diff -f vs kubectl apply --server-side / kubectl diff
--server-side, on the same folder of manifests.

Usage: python3 benches/apply/run.py [OBJECTS] [TRIALS]   (from the repository root)

Builds berth in release mode (unless BERTH_BIN names a binary) and writes a folder of OBJECTS
(default 1,000) manifests (ConfigMaps, Deployments, Services, Secrets in a 5:2:2:1 mix). Then
TRIALS times (default 5), interleaved berth, kubectl, berth, kubectl…, each trial of a tool on
a fresh `berth server` (its own data dir, nothing left from the other tool), in namespace
`bench`:
  1. the first apply of the folder;
  2. a no-op re-apply;
  3. a diff of the folder with 10 objects changed;
  4. the apply of that change.
Each step's output is checked: every object created, then none changed (berth's summary;
kubectl's one line per object), the diff naming exactly the 10 changed objects, and after the
last apply the server holds all OBJECTS objects with the changed values. Medians per step.

Prints a Markdown table for BENCHMARKS.md, then one line per measure for benches/run-all:
`RESULT name figure reference ratio target`.
"""
import base64
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OBJECTS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
TRIALS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
CHANGED = 10
NAMESPACE = "bench"
STEPS = ["first apply", "no-op re-apply", f"diff, {CHANGED} objects changed",
         f"apply of {CHANGED} changed objects"]
# (name in run-all, step index, target)
TARGETS = [("apply-first", 0, "-"), ("apply-noop", 1, "<1s,>=5x"),
           ("diff-10-changed", 2, "<1s,>=5x"), ("apply-10-changed", 3, "-")]


def fail(message):
    sys.exit(f"benches/apply: {message}")


def name_of(i):
    kind = i % 10
    if kind < 5:
        return f"configmap/cm-{i}"
    if kind < 7:
        return f"deployment.apps/web-{i}"
    if kind < 9:
        return f"service/svc-{i}"
    return f"secret/secret-{i}"


def manifest(i, round_):
    """Object i of the folder; objects 0..CHANGED-1 change with each round."""
    value = f"round-{round_}" if i < CHANGED else "steady"
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
        if round_ == 0 or i < CHANGED:
            with open(os.path.join(folder, f"{i:05}.yaml"), "w") as f:
                f.write(manifest(i, round_))


RETRIES = []


def run(cmd, env, ok=(0,)):
    """Runs a timed step; its time, stdout and stderr. berth's batch is refused, changing
    nothing, when the set's objects change while it is computed (the controllers writing the
    new Deployments' status): it is run again, as its message says, within the timed step, and
    the retry is counted."""
    start = time.perf_counter()
    while True:
        r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode == 1 and "kept changing while the batch was computed" in r.stderr:
            RETRIES.append(" ".join(cmd[1:3]))
            continue
        break
    elapsed = time.perf_counter() - start
    if r.returncode not in ok:
        fail(f"{' '.join(cmd)} exited {r.returncode}, not {ok}: {r.stderr[-2000:]}")
    return elapsed, r.stdout, r.stderr


def start_server(berth, data_dir):
    proc = subprocess.Popen([berth, "server", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("listening on "):
            return proc
    fail("berth server did not start")


def server_objects(env):
    """The folder's objects the server holds: name -> the changing value."""
    out = subprocess.run(["kubectl", "get", "configmaps,deployments,services,secrets", "-n", NAMESPACE,
                          "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name}|{.data.value}|"
                          "{.metadata.annotations.bench/value}|{.data.password}{\"\\n\"}{end}"],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True).stdout
    held = {}
    kinds = {"ConfigMap": "configmap", "Deployment": "deployment.apps", "Service": "service", "Secret": "secret"}
    for line in out.splitlines():
        ident, value, annotation, password = line.split("|")
        kind, _, name = ident.partition("/")
        if password:
            password = base64.b64decode(password).decode()
        if re.fullmatch(r"(cm|web|svc|secret)-\d+", name):
            held[f"{kinds[kind]}/{name}"] = value + annotation + password
    return held


def check_first(tool, stdout):
    if tool == "berth":
        want = f"{OBJECTS} created, 0 configured, 0 unchanged, 0 pruned"
        if want not in stdout:
            fail(f"berth's first apply: {want!r} expected, got {stdout[-500:]}")
    else:
        applied = [l for l in stdout.splitlines() if l.endswith(" serverside-applied")]
        if len(applied) != OBJECTS:
            fail(f"kubectl's first apply named {len(applied)} objects, not {OBJECTS}")


def check_noop(tool, stdout):
    if tool == "berth":
        want = f"0 created, 0 configured, {OBJECTS} unchanged, 0 pruned"
        if want not in stdout:
            fail(f"berth's no-op apply: {want!r} expected, got {stdout[-500:]}")
    else:
        applied = [l for l in stdout.splitlines() if l.endswith(" serverside-applied")]
        if len(applied) != OBJECTS:
            fail(f"kubectl's no-op apply named {len(applied)} objects, not {OBJECTS}")


def check_diff(tool, stdout, stderr):
    if tool == "berth":
        want = f"0 to create, {CHANGED} to change, 0 to delete, {OBJECTS - CHANGED} unchanged"
        if want not in stderr:
            fail(f"berth diff: {want!r} expected, got {stderr[-500:]}")
    else:
        headers = [l for l in stdout.splitlines() if l.startswith("diff -u -N ")]
        if len(headers) != CHANGED:
            fail(f"kubectl diff showed {len(headers)} objects, not {CHANGED}: {stdout[:2000]}")


def trial(berth, tool, work, folder):
    """One tool's four steps on a fresh server; their times."""
    data = tempfile.mkdtemp(prefix=f"{tool}-", dir=work)
    server = start_server(berth, os.path.join(data, "data"))
    try:
        env = dict(os.environ, KUBECONFIG=os.path.join(data, "data", "kubeconfig.yaml"), HOME=data)
        subprocess.run(["kubectl", "create", "namespace", NAMESPACE], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        if tool == "berth":
            apply = [berth, "apply", "-f", folder, "-n", NAMESPACE]
            diff = [berth, "diff", "-f", folder, "-n", NAMESPACE]
        else:
            apply = ["kubectl", "apply", "--server-side", "--field-manager", "bench", "-f", folder,
                     "-n", NAMESPACE]
            diff = ["kubectl", "diff", "--server-side", "--field-manager", "bench", "-f", folder,
                    "-n", NAMESPACE]
        write_folder(folder, 0)
        first, out, _ = run(apply, env)
        check_first(tool, out)
        noop, out, _ = run(apply, env)
        check_noop(tool, out)
        write_folder(folder, 1)
        diffed, out, err = run(diff, env, ok=(1,))
        check_diff(tool, out, err)
        changed, _, _ = run(apply, env)
        held = server_objects(env)
        if len(held) != OBJECTS:
            fail(f"{tool}: the server holds {len(held)} of the {OBJECTS} objects")
        for i in range(OBJECTS):
            want = "round-1" if i < CHANGED else "steady"
            value = held.get(name_of(i), "")
            if want not in value:
                fail(f"{tool}: {name_of(i)} holds {value!r}, {want!r} expected")
        return [first, noop, diffed, changed]
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def main():
    berth = os.environ.get("BERTH_BIN")
    if not berth:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        berth = os.path.join(ROOT, "target", "release", "berth")
    work = tempfile.mkdtemp(prefix="berth-apply-bench")
    try:
        folder = os.path.join(work, "manifests")
        times = {"berth": [], "kubectl": []}
        for _ in range(TRIALS):
            for tool in ["berth", "kubectl"]:
                times[tool].append(trial(berth, tool, work, folder))
        med = {tool: [statistics.median(t[i] for t in runs) for i in range(len(STEPS))]
               for tool, runs in times.items()}
        print(f"\n{OBJECTS} objects, {TRIALS} trials per tool, interleaved, a fresh server per trial; "
              f"medians; {os.cpu_count()} cores; berth batches retried after a concurrent change: "
              f"{len(RETRIES)} ({', '.join(RETRIES) or 'none'})\n")
        print("| step | berth | `kubectl --server-side` | kubectl ÷ berth |")
        print("|---|---|---|---|")
        for i, step in enumerate(STEPS):
            b, k = med["berth"][i], med["kubectl"][i]
            print(f"| {step} | {b:.3f} s | {k:.3f} s | {k / b:.1f}× |")
        for name, i, target in TARGETS:
            b, k = med["berth"][i], med["kubectl"][i]
            print(f"RESULT {name} {b:.3f}s kubectl:{k:.3f}s {k / b:.1f}x {target}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
