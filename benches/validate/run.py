#!/usr/bin/env python3
"""Validation speed: berth validate vs kubernetes-validate --strict on the same corpus.

Usage: python3 benches/validate/run.py [DOCUMENTS] [RUNS]   (from the repository root)

Builds berth in release mode (unless BERTH_BIN names a binary), writes a corpus of DOCUMENTS
(default 10,000) manifests with benches/validate/gen_corpus.py (and its index: every
document's file, kind, name and mistake), then runs, interleaved, RUNS times (default 3):
berth validate on one core (taskset -c 0, -j 1), berth validate on all cores, and
kubernetes-validate --strict (PyPI, pinned, installed in target/bench-venv). Medians.

Every run's output is checked, not only its exit code:
  - berth (`--summary`): exit 1, every document read (`N resources found`), and exactly the
    documents the corpus broke judged invalid;
  - kubernetes-validate: exit 1, one verdict line per document of the corpus (no document
    unread), no valid document flagged, and every document broken in a way its schemas can see
    (a misspelt field, a quoted number) flagged;
  - once, untimed, berth's JUnit report: the set of documents it flags is the corpus's set.

Prints a Markdown table for BENCHMARKS.md, then one line per measure for benches/run-all:
`RESULT name figure reference ratio target`.
"""
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import venv
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
CORPUS = os.path.join(ROOT, "target", "bench-corpus")
INDEX = os.path.join(ROOT, "target", "bench-corpus-index.json")
VENV = os.path.join(ROOT, "target", "bench-venv")
PEER_VERSION = "1.37.0"
# The mistakes kubernetes-validate's JSON schemas can see; the others (a label key with a
# space, a quantity's unit) need Kubernetes' own validation, which berth does and it does not.
PEER_SEES = {"misspelt-field", "quoted-number"}


def fail(message):
    sys.exit(f"benches/validate: {message}")


def timed(cmd):
    start = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - start, r


def check_berth(r, broken):
    if r.returncode != 1:
        fail(f"berth validate exited {r.returncode} (1 expected: the corpus has mistakes): {r.stderr[-2000:]}")
    m = re.search(r"Summary: (\d+) resources? found in (\d+) files? - Valid: (\d+), Invalid: (\d+), "
                  r"Errors: (\d+), Skipped: (\d+)", r.stdout)
    if not m:
        fail(f"berth validate printed no summary: {r.stdout[-2000:]}")
    found, _files, valid, invalid, errors, skipped = map(int, m.groups())
    if (found, invalid, valid, errors, skipped) != (DOCS, len(broken), DOCS - len(broken), 0, 0):
        fail(f"berth validate read {found} of {DOCS} documents, judged {invalid} invalid of "
             f"{len(broken)} broken ({m.group(0)})")


def check_peer(r, index):
    if r.returncode != 1:
        fail(f"kubernetes-validate exited {r.returncode} (1 expected): {r.stderr[-2000:]}")
    verdict = re.compile(r"^(INFO|ERROR) (\S+) (?:passed|did not validate) for resource (\S+)/(\S+) ")
    seen = collections.Counter()
    flagged = set()
    for line in r.stdout.splitlines():
        m = verdict.match(line)
        if m:
            level, path, kind, name = m.groups()
            seen[(path, kind.lower(), name)] += 1
            if level == "ERROR":
                flagged.add((path, kind.lower(), name))
    want = collections.Counter((d["file"], d["kind"].lower(), d["name"]) for d in index)
    if seen != want:
        missing = list((want - seen).elements())[:5]
        extra = list((seen - want).elements())[:5]
        fail(f"kubernetes-validate gave {sum(seen.values())} verdicts for {DOCS} documents "
             f"(missing e.g. {missing}, unexpected e.g. {extra}); stderr: {r.stderr[-1000:]}")
    broken = {(d["file"], d["kind"].lower(), d["name"]): d["mistake"] for d in index if d["mistake"]}
    wrongly = [k for k in flagged if k not in broken]
    if wrongly:
        fail(f"kubernetes-validate flagged valid documents: {wrongly[:5]}")
    missed = [k for k, mistake in broken.items() if mistake in PEER_SEES and k not in flagged]
    if missed:
        fail(f"kubernetes-validate missed mistakes its schemas see: {missed[:5]}")
    return len(flagged)


def check_berth_verdicts(berth, index):
    """berth's JUnit report: the documents it flags are exactly the broken ones."""
    r = subprocess.run([berth, "validate", "-o", "junit", CORPUS], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    suite = ET.fromstring(r.stdout)
    flagged, cases = set(), 0
    for case in suite.iter("testcase"):
        cases += 1
        if case.find("failure") is not None:
            flagged.add((case.get("classname"), case.get("name")))

    def describe(d):
        return f"{d['kind']} {d['namespace']}/{d['name']}" if d["namespace"] else f"{d['kind']} {d['name']}"

    broken = {(d["file"], describe(d)) for d in index if d["mistake"]}
    if cases != DOCS or flagged != broken:
        fail(f"berth's JUnit report: {cases} cases for {DOCS} documents; flagged but not broken "
             f"{sorted(flagged - broken)[:5]}, broken but not flagged {sorted(broken - flagged)[:5]}")


def main():
    berth = os.environ.get("BERTH_BIN")
    if not berth:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        berth = os.path.join(ROOT, "target", "release", "berth")
    shutil.rmtree(CORPUS, ignore_errors=True)
    subprocess.run([sys.executable, os.path.join(ROOT, "benches", "validate", "gen_corpus.py"),
                    CORPUS, str(DOCS), "5", INDEX], check=True)
    with open(INDEX) as f:
        index = json.load(f)
    if len(index) != DOCS:
        fail(f"the corpus index lists {len(index)} documents, not {DOCS}")
    broken = [d for d in index if d["mistake"]]
    peer = os.path.join(VENV, "bin", "kubernetes-validate")
    if not os.path.exists(peer):
        venv.create(VENV, with_pip=True)
        subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q",
                        f"kubernetes-validate=={PEER_VERSION}"], check=True)
    version = subprocess.run([peer, "--version"], stdout=subprocess.PIPE, text=True).stdout.strip()
    if version != PEER_VERSION:
        fail(f"kubernetes-validate {version} in {VENV}, {PEER_VERSION} expected (remove the venv)")
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(CORPUS) for f in fs)
    check_berth_verdicts(berth, index)

    runs = {"one": [], "all": [], "peer": []}
    peer_flagged = 0
    for _ in range(RUNS):
        t, r = timed(["taskset", "-c", "0", berth, "validate", "-j", "1", "--summary", CORPUS])
        check_berth(r, broken)
        runs["one"].append(t)
        t, r = timed([berth, "validate", "--summary", CORPUS])
        check_berth(r, broken)
        runs["all"].append(t)
        t, r = timed([peer, "--strict", *files])
        peer_flagged = check_peer(r, index)
        runs["peer"].append(t)
    one, both, peer_time = (statistics.median(runs[k]) for k in ("one", "all", "peer"))

    print(f"\n{DOCS} documents in {len(files)} files, {len(broken)} broken; {RUNS} interleaved runs "
          f"of each (medians); berth flagged {len(broken)}, kubernetes-validate {peer_flagged}\n")
    print("| run | median seconds | documents/s | vs kubernetes-validate |")
    print("|---|---|---|---|")
    for name, t in [("`berth validate -j 1`, one core (`taskset -c 0`)", one),
                    (f"`berth validate`, all {os.cpu_count()} cores", both),
                    (f"`kubernetes-validate --strict` {PEER_VERSION}", peer_time)]:
        print(f"| {name} | {t:.3f} | {DOCS / t:,.0f} | {peer_time / t:,.1f}x |")
    print(f"RESULT validate-one-core {DOCS / one:.0f}docs/s kubernetes-validate:{DOCS / peer_time:.0f}docs/s "
          f"{peer_time / one:.1f}x >=20000docs/s,>=50x")
    print(f"RESULT validate-all-cores {DOCS / both:.0f}docs/s kubernetes-validate:{DOCS / peer_time:.0f}docs/s "
          f"{peer_time / both:.1f}x -")


if __name__ == "__main__":
    main()
