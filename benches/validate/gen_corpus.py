#!/usr/bin/env python3
"""Writes a deterministic corpus of Kubernetes manifests for the validation benchmark.

Usage: gen_corpus.py OUT_DIR [DOCUMENTS] [DOCS_PER_FILE] [INDEX_JSON]

All common kinds at realistic sizes; about 5% of the documents carry a typical mistake
(a misspelt field, a quoted number, a bad quantity, a label key with a space). INDEX_JSON, if
given (outside OUT_DIR), lists every document: its file, kind, name and mistake (or null), so
a benchmark can check that each tool read every document and judged the broken ones.
"""
import json
import os
import random
import re
import sys

PLAIN = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")
YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}

rng = random.Random(20261121)


def labels(app):
    return {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "bench", "tier": rng.choice(["web", "api", "worker"])}


def container(app, i):
    c = {
        "name": f"{app}-{i}",
        "image": f"registry.example/{app}:{rng.randint(1, 40)}.{rng.randint(0, 9)}",
        "imagePullPolicy": "IfNotPresent",
        "args": ["--port=8080", f"--workers={rng.randint(1, 8)}"],
        "ports": [{"name": "http", "containerPort": 8080 + i, "protocol": "TCP"}],
        "env": [{"name": f"VAR_{k}", "value": str(rng.randint(0, 10**6))} for k in range(rng.randint(2, 6))]
        + [{"name": "CONFIG", "valueFrom": {"configMapKeyRef": {"name": f"{app}-config", "key": "config.yaml"}}}],
        "resources": {"requests": {"cpu": f"{rng.choice([50, 100, 250])}m", "memory": f"{rng.choice([64, 128, 256])}Mi"},
                      "limits": {"cpu": f"{rng.choice([500, 1000])}m", "memory": f"{rng.choice([256, 512])}Mi"}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": 8080 + i}, "initialDelaySeconds": 10},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": True}],
    }
    return c


def pod_spec(app):
    return {
        "containers": [container(app, i) for i in range(rng.choice([1, 1, 2]))],
        "volumes": [{"name": "config", "configMap": {"name": f"{app}-config"}}],
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
        "nodeSelector": {"kubernetes.io/os": "linux"},
    }


def meta(kind, n, ns="bench"):
    app = f"{kind.lower()}-{n}"
    return app, {"name": app, "namespace": ns, "labels": labels(app), "annotations": {"bench/generated": "true"}}


def deployment(n):
    app, m = meta("deploy", n)
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": m,
            "spec": {"replicas": rng.randint(1, 5), "selector": {"matchLabels": {"app.kubernetes.io/name": app}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": m["labels"]}, "spec": pod_spec(app)}}}


def statefulset(n):
    d = deployment(n)
    d["kind"] = "StatefulSet"
    d["spec"].pop("strategy")
    d["spec"]["serviceName"] = d["metadata"]["name"]
    d["spec"]["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}]
    return d


def daemonset(n):
    d = deployment(n)
    d["kind"] = "DaemonSet"
    d["spec"].pop("strategy")
    d["spec"].pop("replicas")
    return d


def service(n):
    app, m = meta("svc", n)
    return {"apiVersion": "v1", "kind": "Service", "metadata": m,
            "spec": {"type": rng.choice(["ClusterIP", "NodePort"]), "selector": {"app.kubernetes.io/name": app},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "metrics", "port": 9090, "targetPort": 9090}]}}


def configmap(n):
    app, m = meta("cm", n)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": m,
            "data": {"config.yaml": "\n".join(f"key{k}: value{k}" for k in range(rng.randint(5, 30))), "LOG_LEVEL": "info"}}


def secret(n):
    app, m = meta("secret", n)
    return {"apiVersion": "v1", "kind": "Secret", "metadata": m, "type": "Opaque",
            "data": {"password": "cGFzc3dvcmQ=", "token": "dG9rZW4tdmFsdWU="}}


def cronjob(n):
    app, m = meta("cron", n)
    spec = pod_spec(app)
    spec["restartPolicy"] = "OnFailure"
    return {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": m,
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"metadata": {"labels": m["labels"]}, "spec": spec}}}}}


def ingress(n):
    app, m = meta("ing", n)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": m,
            "spec": {"rules": [{"host": f"{app}.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix",
                     "backend": {"service": {"name": app, "port": {"number": 80}}}}]}}]}}


def role(n):
    app, m = meta("role", n)
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": m,
            "rules": [{"apiGroups": [""], "resources": ["pods", "configmaps"], "verbs": ["get", "list", "watch"]}]}


def pvc(n):
    app, m = meta("pvc", n)
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": m,
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": f"{rng.randint(1, 100)}Gi"}}}}


def service_account(n):
    app, m = meta("sa", n)
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": m}


MAKERS = [(deployment, 20), (service, 18), (configmap, 18), (secret, 8), (statefulset, 5), (daemonset, 3),
          (cronjob, 5), (ingress, 8), (role, 5), (pvc, 5), (service_account, 5)]


def break_it(doc):
    """One typical mistake; returns the document and the mistake's name."""
    choice = rng.randint(0, 3)
    if choice == 0:
        doc["metadata"]["lables"] = doc["metadata"].pop("labels")
        return doc, "misspelt-field"
    if choice == 1 and "spec" in doc and "replicas" in doc["spec"]:
        doc["spec"]["replicas"] = "three"
        return doc, "quoted-number"
    if choice == 2 and doc["kind"] == "Deployment":
        doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] = "512MB"
        return doc, "bad-quantity"
    doc["metadata"]["labels"]["bad label"] = "x"
    return doc, "bad-label"


def to_yaml(value, indent=0):
    """A small block-style YAML emitter (JSON scalars are valid YAML scalars)."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return " {}\n"
        out = "\n"
        for k, v in value.items():
            out += f"{pad}{k}:{to_yaml(v, indent + 1)}"
        return out
    if isinstance(value, list):
        if not value:
            return " []\n"
        out = "\n"
        for v in value:
            body = to_yaml(v, indent + 1)
            out += f"{pad}-{body.lstrip(chr(10)) if isinstance(v, dict) and v else body}" if not isinstance(v, dict) else f"{pad}- " + body.lstrip("\n").lstrip()
        return out
    if isinstance(value, str) and "\n" in value:
        lines = "".join(f"{pad}{line}\n" for line in value.split("\n"))
        return f" |-\n{lines}"
    if isinstance(value, str) and PLAIN.fullmatch(value) and value.lower() not in YAML_WORDS:
        return " " + value + "\n"
    return " " + json.dumps(value) + "\n"


def main():
    out = sys.argv[1]
    total = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    per_file = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    index_path = sys.argv[4] if len(sys.argv) > 4 else None
    os.makedirs(out, exist_ok=True)
    makers = [m for m, w in MAKERS for _ in range(w)]
    invalid = 0
    n = 0
    file_no = 0
    index = []
    while n < total:
        docs = []
        sub = os.path.join(out, f"team-{file_no % 20:02d}")
        path = os.path.join(sub, f"app-{file_no:05d}.yaml")
        for _ in range(min(per_file, total - n)):
            doc = rng.choice(makers)(n)
            mistake = None
            if rng.random() < 0.05:
                doc, mistake = break_it(doc)
                invalid += 1
            docs.append(doc)
            index.append({"file": path, "kind": doc["kind"], "name": doc["metadata"]["name"],
                          "namespace": doc["metadata"].get("namespace"), "mistake": mistake})
            n += 1
        os.makedirs(sub, exist_ok=True)
        with open(path, "w") as f:
            f.write("---\n".join(to_yaml(d).lstrip("\n") for d in docs))
        file_no += 1
    if index_path:
        with open(index_path, "w") as f:
            json.dump(index, f)
    print(f"wrote {n} documents in {file_no} files ({invalid} with a mistake) to {out}")


if __name__ == "__main__":
    main()
