#!/usr/bin/env python3
"""berth agent benchmark: pod start latency against raw `docker run -d`, and agent RSS.

Starts a real `berth server` and `berth agent`, then per trial:
  * berth:  create N single-container pods bound to the agent's node (parallel POSTs) and
            time from the first create to the last pod seen Running through a watch;
  * docker: N parallel `docker run -d` of the same image and command, timed until all
            returned (each has started its container);
  * engine floor: N parallel pods made straight through the Engine API, without berth:
            a sandbox of berth's image with a network namespace the engine leaves alone
            (`NetworkDisabled`, as berth makes it), then the app container joining it,
            timed until all started. This is the engine's own work for a pod, the least
            any agent that gives each pod a sandbox can take (berth adds plugging the
            sandbox into the pod network and writing its hosts and resolv.conf).
Reports the medians and their ratios, then the agent's RSS with --rss-pods pods running.

Usage: benches/agent/run.py [--pods 50] [--trials 3] [--rss-pods 100]   (--trials 0: RSS only)
       BERTH_BIN=target/release/berth (default: release if built, else debug)
Needs Docker and /bin/busybox (Debian busybox-static) for the offline test image.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

IMAGE = "berth-test/busybox:1.36"
SANDBOX_IMAGE = "berth.dev/sandbox:1"
DOCKERFILE = (
    "FROM scratch\nCOPY busybox /bin/busybox\n"
    'RUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
    'RUN ["/bin/busybox", "mkdir", "-m", "1777", "/tmp"]\nCMD ["/bin/sh"]\n'
)
LABEL = "berth.dev/bench"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout.strip()


def ensure_image():
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as ctx:
        shutil.copy("/bin/busybox", os.path.join(ctx, "busybox"))
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write(DOCKERFILE)
        sh("docker", "build", "-q", "-t", IMAGE, ctx)


def berth_bin():
    if os.environ.get("BERTH_BIN"):
        return os.environ["BERTH_BIN"]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for profile in ("release", "debug"):
        path = os.path.join(root, "target", profile, "berth")
        if os.path.exists(path):
            return path
    sys.exit("build berth first (cargo build --release) or set BERTH_BIN")


def wait_line(proc, prefix, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    sys.exit(f"process did not print {prefix!r}")


class Api:
    def __init__(self, url, token, ca):
        self.url, self.token = url, token
        self.ctx = ssl.create_default_context(cafile=ca)

    def call(self, method, path, body=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        return urllib.request.urlopen(req, context=self.ctx, timeout=timeout)


def pod(name, node):
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "app", "image": IMAGE, "imagePullPolicy": "Never",
                                 "command": ["sleep", "3600"]}]},
    }


def watch_running(api, node, names, done):
    """Streams pod events until every name in `names` was seen Running."""
    pending = set(names)
    path = f"/api/v1/namespaces/default/pods?watch=1&fieldSelector=spec.nodeName%3D{node}"
    with api.call("GET", path, timeout=600) as resp:
        for line in resp:
            event = json.loads(line)
            obj = event.get("object", {})
            if obj.get("status", {}).get("phase") == "Running":
                pending.discard(obj["metadata"]["name"])
            if not pending:
                done["at"] = time.time()
                return


def parallel(fn, items, width=16):
    threads, lock, it = [], threading.Lock(), iter(items)

    def worker():
        while True:
            with lock:
                item = next(it, None)
            if item is None:
                return
            fn(item)

    for _ in range(width):
        t = threading.Thread(target=worker)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


def berth_trial(api, node, n, trial):
    names = [f"bench-{trial}-{i}" for i in range(n)]
    done = {}
    watcher = threading.Thread(target=watch_running, args=(api, node, names, done))
    watcher.start()
    time.sleep(0.5)  # the watch is established before the first create
    start = time.time()
    parallel(lambda name: api.call("POST", "/api/v1/namespaces/default/pods", pod(name, node)).read(), names)
    watcher.join(timeout=300)
    if "at" not in done:
        sys.exit("pods did not all reach Running within 300 s")
    return done["at"] - start, names


def delete_pods(api, names):
    body = {"gracePeriodSeconds": 0}
    parallel(lambda n: api.call("DELETE", f"/api/v1/namespaces/default/pods/{n}", body).read(), names)


def docker_trial(n, tag):
    start = time.time()
    parallel(lambda i: sh("docker", "run", "-d", "--label", f"{LABEL}={tag}", IMAGE, "sleep", "3600"), range(n), width=n)
    elapsed = time.time() - start
    ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}={tag}").split()
    if ids:
        sh("docker", "rm", "-f", *ids)
    return elapsed


class EngineConnection(http.client.HTTPConnection):
    """HTTP to the Docker Engine API over its unix socket."""

    def __init__(self, path="/var/run/docker.sock"):
        super().__init__("localhost", timeout=120)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.socket_path)


def engine(method, path, body=None):
    conn = EngineConnection()
    try:
        data = json.dumps(body) if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status >= 300:
            sys.exit(f"engine {method} {path}: {resp.status} {payload.decode(errors='replace')}")
        return json.loads(payload) if payload else None
    finally:
        conn.close()


def engine_pod(tag):
    """The engine's part of a pod: a sandbox owning a network namespace, then the app in it."""
    labels = {LABEL: tag}
    sandbox = engine("POST", "/containers/create", {
        "Image": SANDBOX_IMAGE, "Labels": labels, "NetworkDisabled": True,
        "HostConfig": {"NetworkMode": "none", "Init": True, "ReadonlyRootfs": True},
    })["Id"]
    engine("POST", f"/containers/{sandbox}/start")
    app = engine("POST", "/containers/create", {
        "Image": IMAGE, "Cmd": ["sleep", "3600"], "Labels": labels,
        "HostConfig": {"NetworkMode": f"container:{sandbox}"},
    })["Id"]
    engine("POST", f"/containers/{app}/start")


def floor_trial(n, tag):
    start = time.time()
    parallel(lambda i: engine_pod(tag), range(n), width=n)
    elapsed = time.time() - start
    ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}={tag}").split()
    if ids:
        sh("docker", "rm", "-f", *ids)
    return elapsed


def wait_no_containers(tag, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not sh("docker", "ps", "-aq", "--filter", f"label={LABEL}={tag}"):
            return
        time.sleep(0.5)


def rss_kib(pid, field="VmRSS"):
    """A memory figure of /proc/PID/status: VmRSS (all resident pages) or RssAnon (heap and
    stacks, without the executable's file-backed pages)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--rss-pods", type=int, default=100)
    args = parser.parse_args()
    ensure_image()
    binary = berth_bin()
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    node = "bench-node"
    data = tempfile.mkdtemp(prefix="berth-bench-")
    server = subprocess.Popen([binary, "server", "--listen", "127.0.0.1:0", "--data-dir", data],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    agent = None
    try:
        url = wait_line(server, "listening on ")
        token = open(os.path.join(data, "tokens/admin")).read().strip()
        join = open(os.path.join(data, "tokens/agent-join")).read().strip()
        ca = os.path.join(data, "tls/ca.crt")
        agent = subprocess.Popen(
            [binary, "agent", "--server", url, "--token", join, "--certificate-authority", ca,
             "--node-name", node, "--metrics-listen", "127.0.0.1:0", "--listen", "127.0.0.1:0",
             "--container-label", f"{LABEL}={tag}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wait_line(agent, "node ")
        api = Api(url, token, ca)
        # Warm-up: the sandbox image is built once, outside the timings.
        _, names = berth_trial(api, node, 1, "warm")
        delete_pods(api, names)
        wait_no_containers(tag)

        berth_times, docker_times, floor_times = [], [], []
        for trial in range(args.trials):
            elapsed, names = berth_trial(api, node, args.pods, trial)
            berth_times.append(elapsed)
            delete_pods(api, names)
            wait_no_containers(tag)
            docker_times.append(docker_trial(args.pods, f"{tag}-docker"))
            floor_times.append(floor_trial(args.pods, f"{tag}-floor"))
            print(f"trial {trial}: berth {elapsed:.2f} s, docker run {docker_times[-1]:.2f} s, "
                  f"engine floor {floor_times[-1]:.2f} s", flush=True)
        if berth_times:
            b, d, f = (statistics.median(t) for t in (berth_times, docker_times, floor_times))
            print(f"{args.pods} pods: berth median {b:.2f} s, docker run -d median {d:.2f} s, ratio {b / d:.2f}")
            print(f"engine floor (sandbox + app through the Engine API, no berth) median {f:.2f} s: "
                  f"floor/docker run {f / d:.2f}, berth/floor {b / f:.2f}")
            print(f"RESULT agent-{args.pods}-pods {b:.2f}s docker-run:{d:.2f}s {b / d:.2f} <=1.3")

        _, names = berth_trial(api, node, args.rss_pods, "rss")
        time.sleep(5)
        rss, anon = [], []
        for _ in range(5):
            rss.append(rss_kib(agent.pid))
            anon.append(rss_kib(agent.pid, "RssAnon"))
            time.sleep(1)
        print(f"agent RSS with {args.rss_pods} running pods: median {statistics.median(rss) / 1024:.1f} MiB "
              f"(RssAnon {statistics.median(anon) / 1024:.1f} MiB)")
        print(f"RESULT agent-rss-{args.rss_pods}-pods {statistics.median(rss) / 1024:.1f}MiB - - <=30MiB")
        if os.environ.get("BENCH_SMAPS"):
            os.system(f"cat /proc/{agent.pid}/smaps | awk '/^[0-9a-f]+-/{{name=$6}} /^Rss:/{{r[name]+=$2}} END{{for(n in r) if (r[n]>300) print r[n], n}}' | sort -rn")
        delete_pods(api, names)
        wait_no_containers(tag)
    finally:
        for proc in (agent, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for label in (tag, f"{tag}-docker", f"{tag}-floor"):
            ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}={label}", check=False).split()
            if ids:
                sh("docker", "rm", "-f", *ids, check=False)
            vols = sh("docker", "volume", "ls", "-q", "--filter", f"label={LABEL}={label}", check=False).split()
            if vols:
                sh("docker", "volume", "rm", "-f", *vols, check=False)
            # The agent's pod network carries the labels it was started with.
            nets = sh("docker", "network", "ls", "-q", "--filter", f"label={LABEL}={label}", check=False).split()
            if nets:
                sh("docker", "network", "rm", *nets, check=False)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
