#!/usr/bin/env python3
"""Makes the two data files of berth's protobuf transcoder from Kubernetes' published sources.

    proto/kubernetes.binpb   a FileDescriptorSet of the API's generated.proto files: message
                             names, field names (Kubernetes names proto fields after their
                             JSON names), numbers and types
    proto/go-fields.txt      what JSON does differently from the .proto, per message, read
                             from the Go struct tags: value fields whose zero JSON leaves out
                             (`omitempty`: e, `omitzero`: z; Go's protobuf marshaller writes
                             every value field, zero or not, while a pointer keeps an explicit
                             zero), embedded structs JSON inlines into their parent (i), and
                             JSON names that differ from the proto name (=name); and the
                             patch strategy, merge key, list type and list map keys the
                             OpenAPI documents carry for kubectl's strategic merge patches.

Inputs are checkouts of the Kubernetes staging repositories (k8s.io/api, k8s.io/apimachinery,
k8s.io/apiextensions-apiserver, k8s.io/kube-aggregator) at the commits proto/README.md names;
it needs `protoc` (only this script does: the build reads the committed files).

    python3 proto/generate.py --api ../api --apimachinery ../apimachinery \
        --apiextensions ../apiextensions-apiserver --aggregator ../kube-aggregator
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# (import path prefix, repository argument, folders under it holding generated.proto)
APIMACHINERY_PACKAGES = [
    "pkg/apis/meta/v1",
    "pkg/runtime",
    "pkg/runtime/schema",
    "pkg/api/resource",
    "pkg/util/intstr",
]
APIEXTENSIONS_PACKAGES = ["pkg/apis/apiextensions/v1"]
AGGREGATOR_PACKAGES = ["pkg/apis/apiregistration/v1"]

STRUCT = re.compile(r"^type (\w+) struct ?\{(\})?")
# `type MatchCondition v1.MatchCondition`: a struct of another package under a new name.
ALIAS = re.compile(r"^type (\w+) (\w+)\.(\w+)\s*$")
IMPORT = re.compile(r'^\s*(\w+)?\s*"(k8s\.io/[\w./-]+)"')
FIELD = re.compile(r"^\t(?:(\w+)\s+)?(\S+)\s+`([^`]*)`")
TAG = re.compile(r'(\w+):"([^"]*)"')
PACKAGE = re.compile(r"^package ([\w.]+);", re.M)


KINDS_RS = os.path.join(HERE, "..", "src", "manifest", "kinds.rs")
API_VERSION = re.compile(r'"((?:[a-z0-9.-]+/)?v\d+(?:(?:alpha|beta)\d+)?)", "[a-z]+", (?:true|false)')


def known_api_folders():
    """k8s.io/api folders (`apps/v1`, `core/v1`) of the API versions `berth validate` knows:
    the descriptor set holds those (and what they import), not every old beta, which keeps
    the server's memory down once it has loaded it."""
    with open(KINDS_RS, encoding="utf-8") as f:
        versions = set(API_VERSION.findall(f.read()))
    folders = set()
    for v in versions:
        group, _, version = v.rpartition("/")
        short = {"": "core", "internal.apiserver.k8s.io": "apiserverinternal"}.get(
            group, group.split(".")[0])
        folders.add(f"{short}/{version}")
    return folders


def proto_folders(args):
    """(import path of the folder, folder on disk) of every generated.proto to compile."""
    out = []
    known = known_api_folders()
    for root, _, files in os.walk(args.api):
        rel = os.path.relpath(root, args.api)
        if "generated.proto" in files and rel in known:
            out.append((f"k8s.io/api/{rel}", root))
    for pkg in APIMACHINERY_PACKAGES:
        out.append((f"k8s.io/apimachinery/{pkg}", os.path.join(args.apimachinery, pkg)))
    for pkg in APIEXTENSIONS_PACKAGES:
        out.append((f"k8s.io/apiextensions-apiserver/{pkg}", os.path.join(args.apiextensions, pkg)))
    for pkg in AGGREGATOR_PACKAGES:
        out.append((f"k8s.io/kube-aggregator/{pkg}", os.path.join(args.aggregator, pkg)))
    return sorted(out)


def go_fields(proto_package, folder, aliases):
    """Lines `message field...` for every Go struct in the folder; `aliases` collects
    (message, message it names) for structs declared as another package's type."""
    lines = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".go") or name.endswith("_test.go"):
            continue
        if name.startswith("zz_generated") or name.startswith("generated."):
            continue
        struct = None
        fields = []
        imports = {}
        markers = []  # `// +listType=map` and the like above the next field
        with open(os.path.join(folder, name), encoding="utf-8") as f:
            for line in f:
                m = IMPORT.match(line)
                if m and struct is None:
                    path = m.group(2)
                    imports[m.group(1) or path.rsplit("/", 1)[-1]] = path.replace("/", ".")
                m = ALIAS.match(line)
                if m and m.group(2) in imports:
                    aliases.append((f"{proto_package}.{m.group(1)}",
                                    f"{imports[m.group(2)]}.{m.group(3)}"))
                    continue
                m = STRUCT.match(line)
                if m and m.group(2):
                    lines.append(f"{proto_package}.{m.group(1)}")
                    continue
                if m:
                    struct, fields = m.group(1), []
                    continue
                if struct is None:
                    continue
                if line.startswith("}"):
                    if fields is not None:
                        lines.append(" ".join([f"{proto_package}.{struct}"] + fields))
                    struct = None
                    continue
                comment = line.strip()
                if comment.startswith("// +list"):
                    markers.append(comment[3:])
                    continue
                m = FIELD.match(line)
                if not m:
                    if not comment.startswith("//"):
                        markers = []
                    continue
                field_markers, markers = markers, []
                go_type = m.group(2)  # an embedded struct has its type only
                tags = dict(TAG.findall(m.group(3)))
                if "," not in tags.get("protobuf", ""):
                    continue
                protobuf = tags["protobuf"].split(",")
                number = protobuf[1]
                proto_name = next((o[5:] for o in protobuf if o.startswith("name=")), "")
                json_name, *options = tags.get("json", "").split(",")
                if json_name == "-":
                    continue
                flags = ""
                embedded = m.group(1) is None
                if embedded and not json_name:
                    flags += "i"
                elif not go_type.startswith("*"):
                    if "omitzero" in options:
                        flags += "z"
                    elif "omitempty" in options:
                        flags += "e"
                if json_name and json_name != proto_name and "i" not in flags:
                    flags += "=" + json_name
                patch = []
                if tags.get("patchStrategy"):
                    patch.append("ps=" + tags["patchStrategy"])
                if tags.get("patchMergeKey"):
                    patch.append("pk=" + tags["patchMergeKey"])
                list_keys = []
                for marker in field_markers:
                    if marker.startswith("+listType="):
                        patch.append("lt=" + marker.split("=", 1)[1])
                    elif marker.startswith("+listMapKey="):
                        list_keys.append(marker.split("=", 1)[1])
                if list_keys:
                    patch.append("lk=" + "|".join(list_keys))
                if patch:
                    patch.insert(0, "n=" + json_name)
                if flags or patch:
                    fields.append(";".join([number + flags] + patch))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag in ("api", "apimachinery", "apiextensions", "aggregator"):
        parser.add_argument(f"--{flag}", required=True)
    args = parser.parse_args()
    folders = proto_folders(args)
    table = []
    aliases = []
    with tempfile.TemporaryDirectory() as include:
        files = []
        for import_path, folder in folders:
            target = os.path.join(include, import_path)
            os.makedirs(target, exist_ok=True)
            source = os.path.abspath(os.path.join(folder, "generated.proto"))
            os.symlink(source, os.path.join(target, "generated.proto"))
            files.append(f"{import_path}/generated.proto")
            with open(os.path.join(folder, "generated.proto"), encoding="utf-8") as f:
                package = PACKAGE.search(f.read()).group(1)
            table.extend(go_fields(package, folder, aliases))
        subprocess.run(
            ["protoc", f"--proto_path={include}", "--include_imports",
             f"--descriptor_set_out={os.path.join(HERE, 'kubernetes.binpb')}", *files],
            check=True,
        )
    by_name = {line.split(" ", 1)[0]: line for line in table}
    for alias, target in aliases:
        if target in by_name:
            table.append(alias + by_name[target][len(target):])
    with open(os.path.join(HERE, "go-fields.txt"), "w", encoding="utf-8") as f:
        f.write("# Generated by proto/generate.py from the Go types of the Kubernetes API.\n")
        f.write("# A message, then its fields JSON treats apart: NUMBER then e (a zero is omitted,\n")
        f.write("# omitempty), z (omitzero), i (inlined into the parent), =NAME (the JSON name);\n")
        f.write("# then for OpenAPI ;n=JSON name ;ps=patchStrategy ;pk=patchMergeKey ;lt=listType\n")
        f.write("# ;lk=listMapKeys (a|b).\n")
        for line in sorted(table):
            f.write(line + "\n")
    print(f"{len(folders)} proto files, {len(table)} Go structs", file=sys.stderr)


if __name__ == "__main__":
    main()
