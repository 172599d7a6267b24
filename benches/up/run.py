#!/usr/bin/env python3
"""berth up benchmark: time to Ready against plain `docker run`, idle RSS, binary size.

Per trial:
  * berth:  `berth up examples/manifests --exit-when-ready --down` on a fresh data dir, timed
            from the launch to the line `ready: all ... Ready` (API server, store, agent,
            apply, scheduling, sandboxes, containers and readiness probes all included);
            --down then removes everything (not timed).
  * docker: the same app containers started with `docker run -d` from one script (three web
            servers, the report pod's helper and app sharing a network namespace and a
            volume), timed until every web server answers HTTP on port 8080 and the report is
            served on localhost:8081 - the readiness berth waits for.
Then the idle RSS of one `berth up` (control plane and agent in one process) 15 s after the
example is Ready, and the size of the berth binary.

Usage: benches/up/run.py [--trials 5]      BERTH_BIN=target/release/berth (default: release
       if built, else debug). Needs Docker, and busybox:1.36 (examples/images.sh builds it
       offline).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = "busybox:1.36"
LABEL = "berth.dev/bench"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True).stdout.strip()


def berth_bin():
    if os.environ.get("BERTH_BIN"):
        return os.environ["BERTH_BIN"]
    for profile in ("release", "debug"):
        for target in (os.environ.get("CARGO_TARGET_DIR"), os.path.join(ROOT, "target")):
            if target and os.path.exists(os.path.join(target, profile, "berth")):
                return os.path.join(target, profile, "berth")
    sys.exit("build berth first (cargo build --release) or set BERTH_BIN")


def remove_labelled(value):
    ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}={value}").split()
    if ids:
        sh("docker", "rm", "-f", "-v", *ids, check=False)
    vols = sh("docker", "volume", "ls", "-q", "--filter", f"label={LABEL}={value}").split()
    if vols:
        sh("docker", "volume", "rm", "-f", *vols, check=False)


def start_up(berth, data_dir, value, extra):
    return subprocess.Popen(
        [berth, "up", os.path.join(ROOT, "examples/manifests"), "--data-dir", data_dir,
         "--listen", "127.0.0.1:0", "--container-label", f"{LABEL}={value}", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "RUST_LOG": "error"},
    )


def wait_ready(proc, timeout=300):
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if line.startswith("ready: all"):
            return
        if time.monotonic() > deadline:
            break
    proc.kill()
    sys.exit("berth up did not become Ready")


def berth_trial(berth):
    value = uuid.uuid4().hex[:10]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            start = time.monotonic()
            proc = start_up(berth, os.path.join(tmp, "data"), value,
                            ["--exit-when-ready", "--timeout", "300", "--down"])
            wait_ready(proc)
            elapsed = time.monotonic() - start
            proc.wait(timeout=120)
            return elapsed
        finally:
            remove_labelled(value)


def docker_trial():
    value = uuid.uuid4().hex[:10]
    label = ["--label", f"{LABEL}={value}"]
    try:
        start = time.monotonic()
        volume = sh("docker", "volume", "create", *label)
        webs = []
        procs = []
        for _ in range(3):
            # The site the ConfigMap volume mounts in berth: written by the container itself.
            procs.append(subprocess.Popen(
                ["docker", "run", "-d", *label, IMAGE, "sh", "-c",
                 "mkdir -p /srv && echo '<h1>Hello from berth</h1>' > /srv/index.html && "
                 "exec httpd -f -p 8080 -h /srv"],
                stdout=subprocess.PIPE, text=True))
        helper = subprocess.run(
            ["docker", "run", "-d", *label, "-v", f"{volume}:/shared", IMAGE, "sh", "-c",
             "while true; do date > /shared/report.txt; sleep 5; done & httpd -f -p 8081 -h /shared"],
            check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run(
            ["docker", "run", "-d", *label, f"--network=container:{helper}", IMAGE, "sh", "-c",
             "while true; do wget -q -O - http://localhost:8081/report.txt; sleep 10; done"],
            check=True, capture_output=True)
        for p in procs:
            webs.append(p.communicate()[0].strip())
        checks = [(w, "http://localhost:8080/index.html") for w in webs]
        checks.append((helper, "http://localhost:8081/report.txt"))
        while checks:
            checks = [(c, url) for c, url in checks
                      if subprocess.run(["docker", "exec", c, "wget", "-q", "-O", "/dev/null", url],
                                        capture_output=True).returncode != 0]
            if checks:
                time.sleep(0.05)
        return time.monotonic() - start
    finally:
        remove_labelled(value)


def idle_rss(berth):
    value = uuid.uuid4().hex[:10]
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_up(berth, os.path.join(tmp, "data"), value, [])
        try:
            wait_ready(proc)
            time.sleep(15)
            with open(f"/proc/{proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        finally:
            proc.send_signal(2)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            remove_labelled(value)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    berth = berth_bin()
    subprocess.run([os.path.join(ROOT, "examples/images.sh")], check=True,
                   env={**os.environ, "BERTH_OFFLINE": "1"}, capture_output=True)
    print(f"berth: {berth}")
    berth_times, docker_times = [], []
    for i in range(args.trials):
        b = berth_trial(berth)
        d = docker_trial()
        berth_times.append(b)
        docker_times.append(d)
        print(f"trial {i + 1}: berth up {b:.2f} s, docker run {d:.2f} s", flush=True)
    if args.trials:
        mb, md = statistics.median(berth_times), statistics.median(docker_times)
        print(f"median time to Ready: berth up {mb:.2f} s, docker run {md:.2f} s, ratio {mb / md:.2f}")
        print(f"RESULT up-time-to-ready {mb:.2f}s docker-run:{md:.2f}s {mb / md:.2f} <=1.5")
    rss = idle_rss(berth)
    print(f"idle RSS of berth up with the example running: {rss:.1f} MiB")
    print(f"RESULT up-idle-rss {rss:.1f}MiB - - <100MiB")
    print(f"binary size: {os.path.getsize(berth) / 1e6:.1f} MB ({berth})")


if __name__ == "__main__":
    main()
