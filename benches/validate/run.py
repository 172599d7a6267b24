#!/usr/bin/env python3
"""Validation speed: berth validate vs kubernetes-validate --strict on the same corpus.

Usage: python3 benches/validate/run.py [DOCUMENTS]   (from the repository root)

Builds berth in release mode, writes a corpus of DOCUMENTS (default 10,000) manifests with
benches/validate/gen_corpus.py, then times, on the same corpus and machine:
  - berth validate on one core (taskset -c 0, -j 1), 5 runs, median;
  - berth validate on all cores, 5 runs, median;
  - kubernetes-validate --strict (PyPI, installed in target/bench-venv), 1 run (it is slow).
Prints documents/s for each and the ratios, as a Markdown table for BENCHMARKS.md.
"""
import os
import shutil
import statistics
import subprocess
import sys
import time
import venv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
CORPUS = os.path.join(ROOT, "target", "bench-corpus")
BERTH = os.path.join(ROOT, "target", "release", "berth")
VENV = os.path.join(ROOT, "target", "bench-venv")


def timed(cmd, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
        if r.returncode not in (0, 1):
            sys.exit(f"{cmd[0]} failed with exit code {r.returncode}")
    return statistics.median(times)


def main():
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    shutil.rmtree(CORPUS, ignore_errors=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "benches", "validate", "gen_corpus.py"), CORPUS, str(DOCS), "5"], check=True)
    peer = os.path.join(VENV, "bin", "kubernetes-validate")
    if not os.path.exists(peer):
        venv.create(VENV, with_pip=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", "kubernetes-validate"], check=True)
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(CORPUS) for f in fs)

    one_core = timed(["taskset", "-c", "0", BERTH, "validate", "-j", "1", CORPUS], 5)
    all_cores = timed([BERTH, "validate", CORPUS], 5)
    peer_time = timed([peer, "--strict", *files], 1)

    rows = [
        ("berth validate, 1 core", one_core),
        (f"berth validate, all {os.cpu_count()} cores", all_cores),
        ("kubernetes-validate --strict", peer_time),
    ]
    print(f"\n{DOCS} documents in {len(files)} files\n")
    print("| run | median seconds | documents/s | vs kubernetes-validate |")
    print("|---|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t:.3f} | {DOCS / t:,.0f} | {peer_time / t:,.1f}x |")


if __name__ == "__main__":
    main()
