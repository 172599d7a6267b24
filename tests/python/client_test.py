"""The official Kubernetes Python client against a live berth server.

Run by tests/api_python.rs with KUBECONFIG pointing at the server's kubeconfig. Exits non-zero
(with a traceback) on the first failed check.
"""

import os
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=os.environ["KUBECONFIG"])
core = client.CoreV1Api()
apps = client.AppsV1Api()
NS = "default"


def configmaps():
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm", labels={"from": "python"}), data={"a": "1"})
    created = core.create_namespaced_config_map(NS, body)
    assert created.metadata.uid and created.metadata.resource_version, created
    got = core.read_namespaced_config_map("py-cm", NS)
    assert got.data == {"a": "1"}, got.data
    listed = core.list_namespaced_config_map(NS, label_selector="from=python")
    assert [i.metadata.name for i in listed.items] == ["py-cm"], listed
    patched = core.patch_namespaced_config_map("py-cm", NS, {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}, patched.data
    got.data = {"c": "3"}
    # `got` carries the resourceVersion from before the patch: a stale update is a 409.
    try:
        core.replace_namespaced_config_map("py-cm", NS, got)
        raise AssertionError("a stale replace succeeded")
    except ApiException as e:
        assert e.status == 409, e
    fresh = core.read_namespaced_config_map("py-cm", NS)
    fresh.data = {"c": "3"}
    replaced = core.replace_namespaced_config_map("py-cm", NS, fresh)
    assert replaced.data == {"c": "3"}, replaced.data
    core.delete_namespaced_config_map("py-cm", NS)
    try:
        core.read_namespaced_config_map("py-cm", NS)
        raise AssertionError("deleted config map still readable")
    except ApiException as e:
        assert e.status == 404, e


def secrets():
    body = client.V1Secret(metadata=client.V1ObjectMeta(name="py-secret"), string_data={"password": "s3cret"})
    core.create_namespaced_secret(NS, body)
    got = core.read_namespaced_secret("py-secret", NS)
    assert got.data == {"password": "czNjcmV0"}, got.data
    assert got.type == "Opaque"
    core.patch_namespaced_secret("py-secret", NS, {"metadata": {"labels": {"x": "y"}}})
    got = core.read_namespaced_secret("py-secret", NS)
    got.data["user"] = "YWRtaW4="
    replaced = core.replace_namespaced_secret("py-secret", NS, got)
    assert set(replaced.data) == {"password", "user"}, replaced.data
    assert [s.metadata.name for s in core.list_namespaced_secret(NS).items] == ["py-secret"]
    core.delete_namespaced_secret("py-secret", NS)


def deployments():
    container = client.V1Container(name="web", image="nginx:1.27", ports=[client.V1ContainerPort(container_port=80)])
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": "py"}), spec=client.V1PodSpec(containers=[container])
    )
    spec = client.V1DeploymentSpec(replicas=1, selector=client.V1LabelSelector(match_labels={"app": "py"}), template=template)
    body = client.V1Deployment(metadata=client.V1ObjectMeta(name="py-web"), spec=spec)
    created = apps.create_namespaced_deployment(NS, body)
    assert created.spec.strategy.type == "RollingUpdate", created.spec.strategy
    assert created.spec.template.spec.containers[0].image_pull_policy == "IfNotPresent"
    patched = apps.patch_namespaced_deployment("py-web", NS, {"spec": {"replicas": 3}})
    assert patched.spec.replicas == 3 and patched.metadata.generation == 2, patched.metadata
    scale = apps.read_namespaced_deployment_scale("py-web", NS)
    assert scale.spec.replicas == 3, scale
    # The Deployment controller writes the status meanwhile, so a replace can meet a 409
    # Conflict; a client then reads again and retries, as client-go's RetryOnConflict does.
    for attempt in range(5):
        current = apps.read_namespaced_deployment("py-web", NS)
        current.spec.template.spec.containers[0].image = "nginx:1.28"
        try:
            replaced = apps.replace_namespaced_deployment("py-web", NS, current)
            break
        except ApiException as e:
            if e.status != 409 or attempt == 4:
                raise
    assert replaced.spec.template.spec.containers[0].image == "nginx:1.28"
    assert [d.metadata.name for d in apps.list_deployment_for_all_namespaces().items] == ["py-web"]
    apps.delete_namespaced_deployment("py-web", NS)


def watches():
    start = core.list_namespaced_config_map(NS).metadata.resource_version
    seen = []
    done = threading.Event()

    def run():
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_config_map, NS, resource_version=start, timeout_seconds=20):
            if event["object"].metadata.name == "py-watched":
                seen.append(event["type"])
            if event["type"] == "DELETED":
                w.stop()
        done.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(1)
    core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-watched"), data={"v": "1"}))
    core.patch_namespaced_config_map("py-watched", NS, {"data": {"v": "2"}})
    core.delete_namespaced_config_map("py-watched", NS)
    assert done.wait(20), f"watch did not finish: {seen}"
    assert seen == ["ADDED", "MODIFIED", "DELETED"], seen


configmaps()
secrets()
deployments()
watches()
print("python client: all checks passed")
