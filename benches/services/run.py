#!/usr/bin/env python3
"""berth Service benchmark: requests/s and p99 latency through a ClusterIP against the same
pod by its pod IP, in the same run.

Starts a real `berth server` and `berth agent`, one busybox `httpd` pod behind a Service, then
alternates `wrk` runs from the host against http://POD_IP:8080/ (direct) and
http://CLUSTER_IP/ (through the agent's nftables DNAT), --rounds times each, and reports the
medians, the throughput ratio and the p99 overhead. busybox httpd closes every connection, so
each request is a new connection: a new conntrack entry and a fresh DNAT decision, the worst
case for a Service.

Usage: benches/services/run.py [--rounds 5] [--duration 10] [--connections 16] [--threads 2]
       BERTH_BIN=target/release/berth (default: release if built, else debug)
Needs root, Docker, nft, iptables, wrk (Debian: apt-get install wrk nftables) and /bin/busybox
(busybox-static) for the offline test image.
"""

import argparse
import json
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

IMAGE = "berth-test/busybox:1.36"
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
        with urllib.request.urlopen(req, context=self.ctx, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")


def until(what, check, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    sys.exit(f"{what} did not happen within {timeout} s")


def wrk(url, args):
    out = sh("wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s",
             "--latency", url)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return rps, float(m.group(1)) * scale, errors.group(0) if errors else ""


def cleanup(tag, data):
    ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}={tag}", check=False).split()
    if ids:
        sh("docker", "rm", "-f", "-v", *ids, check=False)
    for net in sh("docker", "network", "ls", "-q", "--filter", f"label={LABEL}={tag}",
                  check=False).split():
        sh("docker", "network", "rm", net, check=False)
    mark = f"{LABEL}={tag}"
    for line in sh("nft", "list", "tables", check=False).splitlines():
        name = line.removeprefix("table ip ")
        if name.startswith("berth_") and mark in sh("nft", "list", "table", "ip", name, check=False):
            sh("nft", "delete", "table", "ip", name, check=False)
    for rule in sh("iptables", "-w", "-S", "DOCKER-USER", check=False).splitlines():
        if mark in rule:
            cidr = rule.split()[3]
            flag = rule.split()[2]
            comment = rule.split('"')[1]
            sh("iptables", "-w", "-D", "DOCKER-USER", flag, cidr, "-m", "comment", "--comment",
               comment, "-j", "ACCEPT", check=False)
    shutil.rmtree(data, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for tool in ("wrk", "nft", "iptables", "docker"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (apt-get install wrk nftables iptables)")
    ensure_image()
    binary = berth_bin()
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    node = "bench-svc"
    data = tempfile.mkdtemp(prefix="berth-bench-")
    server = subprocess.Popen(
        [binary, "server", "--listen", "127.0.0.1:0", "--data-dir", data,
         "--cluster-cidr", "10.203.0.0/16"],
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
        wait_line(agent, "pod network ")
        api = Api(url, token, ca)
        api.call("POST", "/api/v1/namespaces/default/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "bench-web", "labels": {"app": "bench-web"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 0, "containers": [{
                "name": "httpd", "image": IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && "
                            "exec httpd -f -p 8080 -h /www"],
                "ports": [{"name": "http", "containerPort": 8080}]}]}})
        svc = api.call("POST", "/api/v1/namespaces/default/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench-web"},
            "spec": {"selector": {"app": "bench-web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
        cluster_ip = svc["spec"]["clusterIP"]
        pod_ip = until("the pod running", lambda: api.call(
            "GET", "/api/v1/namespaces/default/pods/bench-web").get("status", {}).get("podIP"))

        def ready_endpoint():
            try:
                ep = api.call("GET", "/api/v1/namespaces/default/endpoints/bench-web")
            except urllib.error.HTTPError:
                return None
            return any(a["ip"] == pod_ip for s in ep.get("subsets") or []
                       for a in s.get("addresses") or [])

        until("the Endpoints listing the pod", ready_endpoint)
        direct, service = f"http://{pod_ip}:8080/", f"http://{cluster_ip}/"
        until("the Service answering", lambda: subprocess.run(
            ["wrk", "-t1", "-c1", "-d1s", service], capture_output=True).returncode == 0)
        print(f"berth {binary}; pod {pod_ip}, ClusterIP {cluster_ip}; wrk -t{args.threads} "
              f"-c{args.connections} -d{args.duration}s, {args.rounds} rounds")
        results = {"direct": [], "service": []}
        for r in range(args.rounds):
            order = [("direct", direct), ("service", service)]
            if r % 2:
                order.reverse()
            for name, target in order:
                rps, p99, errors = wrk(target, args)
                results[name].append((rps, p99))
                print(f"round {r + 1} {name:8} {rps:10.0f} req/s  p99 {p99:7.2f} ms  {errors}")
        med = {k: (statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals))
               for k, vals in results.items()}
        ratio = med["service"][0] / med["direct"][0]
        overhead = med["service"][1] - med["direct"][1]
        print(f"median direct  {med['direct'][0]:.0f} req/s, p99 {med['direct'][1]:.2f} ms")
        print(f"median service {med['service'][0]:.0f} req/s, p99 {med['service'][1]:.2f} ms")
        print(f"service/direct throughput {ratio:.1%} (target >= 80%), "
              f"p99 overhead {overhead:+.2f} ms (target < 1 ms)")
        print(f"RESULT service-throughput {med['service'][0]:.0f}req/s direct:{med['direct'][0]:.0f}req/s "
              f"{ratio:.2f} >=0.80")
        print(f"RESULT service-p99 {med['service'][1]:.2f}ms direct:{med['direct'][1]:.2f}ms "
              f"{overhead:+.2f}ms <+1ms")
    finally:
        for proc in (agent, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        cleanup(tag, data)


if __name__ == "__main__":
    main()
