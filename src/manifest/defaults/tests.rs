//! What berth's API server stores for each kind it serves, object in → object stored, with the
//! expected values written from Kubernetes 1.37's defaulting code; and the diff's round trip.

use serde_json::{Value, json};

use super::{apply_defaults, apply_server_defaults, strip_defaults};

fn container_defaults(mut c: Value) -> Value {
    c["imagePullPolicy"] = json!("IfNotPresent");
    c["terminationMessagePath"] = json!("/dev/termination-log");
    c["terminationMessagePolicy"] = json!("File");
    if c.get("resources").is_none() {
        c["resources"] = json!({});
    }
    c
}

fn pod_spec_defaults(mut spec: Value) -> Value {
    spec["dnsPolicy"] = json!("ClusterFirst");
    spec["restartPolicy"] = json!("Always");
    spec["securityContext"] = json!({});
    spec["terminationGracePeriodSeconds"] = json!(30);
    spec["schedulerName"] = json!("default-scheduler");
    spec
}

fn template(spec: Value) -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": spec})
}

/// `(what the case is, object in, object stored)`, one or more per served kind.
fn cases() -> Vec<(&'static str, Value, Value)> {
    let web = json!({"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]});
    let mut web_stored = container_defaults(web.clone());
    web_stored["ports"][0]["protocol"] = json!("TCP");
    let mut host_port_web = web_stored.clone();
    host_port_web["ports"][0]["hostPort"] = json!(80);
    vec![
        (
            "Namespace: its name as a label, the kubernetes finalizer, Active",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
            json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop"}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        ),
        (
            "Pod: spec, containers, probes, volumes, requests from limits, Guaranteed",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "web", "image": "nginx",
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                    "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    "readinessProbe": {"httpGet": {"port": 80}},
                    "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/quit"}}}}],
                    "volumes": [{"name": "scratch"}, {"name": "cfg", "configMap": {"name": "cfg"}},
                        {"name": "host", "hostPath": {"path": "/srv"}}]}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": pod_spec_defaults(json!({
                    "containers": [{"name": "web", "image": "nginx", "imagePullPolicy": "Always",
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File",
                        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"},
                            "requests": {"cpu": "500m", "memory": "64Mi"}},
                        "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName", "apiVersion": "v1"}}}],
                        "readinessProbe": {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
                            "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1,
                            "failureThreshold": 3},
                        "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/quit", "scheme": "HTTP"}}}}],
                    "volumes": [{"name": "scratch", "emptyDir": {}},
                        {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}},
                        {"name": "host", "hostPath": {"path": "/srv", "type": ""}}],
                    "enableServiceLinks": true})),
                "status": {"phase": "Pending", "qosClass": "Guaranteed"}}),
        ),
        (
            "Pod on the host network: container ports are host ports; no resources, BestEffort",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"hostNetwork": true, "containers": [web.clone()]}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": pod_spec_defaults(json!({"hostNetwork": true, "enableServiceLinks": true,
                    "containers": [host_port_web]})),
                "status": {"phase": "Pending", "qosClass": "BestEffort"}}),
        ),
        (
            "Pod with requests below its limits: Burstable",
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "resources": {
                    "requests": {"cpu": "50m"}, "limits": {"cpu": "250m", "memory": "64Mi"}}}]}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": pod_spec_defaults(json!({"enableServiceLinks": true, "containers": [
                    container_defaults(json!({"name": "c", "image": "busybox:1.36", "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "250m", "memory": "64Mi"}}}))]})),
                "status": {"phase": "Pending", "qosClass": "Burstable"}}),
        ),
        (
            "Service: ClusterIP, one IPv4 family, ports with protocol and targetPort",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "targetPort": "dns"}]}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "type": "ClusterIP", "sessionAffinity": "None",
                    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80},
                        {"port": 53, "protocol": "UDP", "targetPort": "dns"}],
                    "internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "SingleStack",
                    "ipFamilies": ["IPv4"]},
                "status": {"loadBalancer": {}}}),
        ),
        (
            "Service: LoadBalancer adds external traffic policy and node ports",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "sessionAffinity": "None",
                    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                    "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
                    "allocateLoadBalancerNodePorts": true, "ipFamilyPolicy": "SingleStack",
                    "ipFamilies": ["IPv4"]},
                "status": {"loadBalancer": {}}}),
        ),
        (
            // Was wrong: berth stored ipFamilyPolicy, ipFamilies and internalTrafficPolicy here.
            "Service: ExternalName gets no IP family or traffic policy",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                "spec": {"type": "ExternalName", "externalName": "db.example.com",
                    "sessionAffinity": "None"},
                "status": {"loadBalancer": {}}}),
        ),
        (
            "Service: headless without a selector asks for both families",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers"},
                "spec": {"clusterIP": "None", "ports": [{"port": 7000}]}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers"},
                "spec": {"clusterIP": "None", "type": "ClusterIP", "sessionAffinity": "None",
                    "ports": [{"port": 7000, "protocol": "TCP", "targetPort": 7000}],
                    "internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "RequireDualStack",
                    "ipFamilies": ["IPv4", "IPv6"]},
                "status": {"loadBalancer": {}}}),
        ),
        (
            "Service: ClientIP affinity gets its timeout; external IPs make it external",
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "sessionAffinity": "ClientIP",
                    "externalIPs": ["192.0.2.7"], "ports": [{"port": 80}]}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "sessionAffinity": "ClientIP",
                    "externalIPs": ["192.0.2.7"], "type": "ClusterIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                    "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}],
                    "externalTrafficPolicy": "Cluster", "internalTrafficPolicy": "Cluster",
                    "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]},
                "status": {"loadBalancer": {}}}),
        ),
        (
            "Endpoints: port protocol",
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
                "subsets": [{"addresses": [{"ip": "10.42.0.5"}], "ports": [{"port": 80}]}]}),
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
                "subsets": [{"addresses": [{"ip": "10.42.0.5"}], "ports": [{"port": 80, "protocol": "TCP"}]}]}),
        ),
        (
            "EndpointSlice: port name and protocol",
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-1"}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.42.0.5"]}], "ports": [{"port": 80}]}),
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "web-1"}, "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.42.0.5"]}],
                "ports": [{"port": 80, "name": "", "protocol": "TCP"}]}),
        ),
        (
            "ConfigMap: nothing",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "b"}}),
        ),
        (
            "Secret: Opaque, stringData folded into data",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "data": {"a": "eA=="}, "stringData": {"b": "y"}}),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "data": {"a": "eA==", "b": "eQ=="}, "type": "Opaque"}),
        ),
        (
            "Node: allocatable is the capacity when not given",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                "status": {"capacity": {"cpu": "2", "memory": "4Gi"}}}),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                "status": {"capacity": {"cpu": "2", "memory": "4Gi"},
                    "allocatable": {"cpu": "2", "memory": "4Gi"}}}),
        ),
        (
            "Event: nothing",
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
                "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Started"}),
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
                "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Started"}),
        ),
        (
            "Deployment: replicas, rolling update, limits, template",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": template(json!({"containers": [web.clone()]}))}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "replicas": 1,
                    "strategy": {"type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}},
                    "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                    "template": template(pod_spec_defaults(json!({"containers": [web_stored.clone()]})))}}),
        ),
        (
            // Was wrong: berth left a strategy that names only its rolling update untyped.
            "Deployment: a partial strategy is completed",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 3, "strategy": {"rollingUpdate": {"maxSurge": 1}},
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": template(json!({"containers": [web.clone()]}))}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "strategy": {"type": "RollingUpdate",
                        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": 1}},
                    "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                    "template": template(pod_spec_defaults(json!({"containers": [web_stored.clone()]})))}}),
        ),
        (
            "Deployment: Recreate gets no rolling update",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"strategy": {"type": "Recreate"}, "selector": {"matchLabels": {"app": "web"}},
                    "template": template(json!({"containers": [web.clone()]}))}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 1, "strategy": {"type": "Recreate"},
                    "selector": {"matchLabels": {"app": "web"}},
                    "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
                    "template": template(pod_spec_defaults(json!({"containers": [web_stored.clone()]})))}}),
        ),
        (
            "ReplicaSet: replicas and template",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1"},
                "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": template(json!({"containers": [web.clone()]}))}}),
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    "template": template(pod_spec_defaults(json!({"containers": [web_stored.clone()]})))}}),
        ),
        (
            "Lease: nothing",
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}}),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "n1"}, "spec": {"holderIdentity": "n1"}}),
        ),
        (
            "GitSource: nothing (berth's own kind reads its defaults when it reads the spec)",
            json!({"apiVersion": "berth.dev/v1", "kind": "GitSource", "metadata": {"name": "app"},
                "spec": {"url": "https://example.invalid/app.git"}}),
            json!({"apiVersion": "berth.dev/v1", "kind": "GitSource", "metadata": {"name": "app"},
                "spec": {"url": "https://example.invalid/app.git"}}),
        ),
        (
            "PersistentVolume: Retain, Filesystem, Pending",
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"},
                "spec": {"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/srv"}}}),
            json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"},
                "spec": {"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/srv"},
                    "persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem"},
                "status": {"phase": "Pending"}}),
        ),
        (
            "StorageClass: Delete, Immediate",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "fast"}, "provisioner": "example.com/disk"}),
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": "fast"}, "provisioner": "example.com/disk",
                "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate"}),
        ),
        (
            "PriorityClass: preempts lower priorities",
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": "high"}, "value": 1000}),
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": "high"}, "value": 1000,
                "preemptionPolicy": "PreemptLowerPriority"}),
        ),
        (
            "CSIDriver: attach required, persistent volumes",
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
                "metadata": {"name": "disk.example.com"}, "spec": {}}),
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver",
                "metadata": {"name": "disk.example.com"}, "spec": {"attachRequired": true,
                    "podInfoOnMount": false, "requiresRepublish": false, "storageCapacity": false,
                    "seLinuxMount": false, "fsGroupPolicy": "ReadWriteOnceWithFSType",
                    "volumeLifecycleModes": ["Persistent"]}}),
        ),
    ]
}

#[test]
fn each_served_kind_is_stored_with_the_defaults_kubernetes_sets() {
    for (case, input, stored) in cases() {
        let mut object = input.clone();
        apply_server_defaults(&mut object);
        assert_eq!(
            object,
            stored,
            "{case}\n got: {}",
            serde_json::to_string_pretty(&object).unwrap()
        );
        // Defaults are idempotent: an update of the stored object changes nothing.
        apply_server_defaults(&mut object);
        assert_eq!(object, stored, "{case}: a second write changed it");
    }
}

#[test]
fn every_served_kind_has_a_case() {
    let served = [
        "Namespace",
        "Pod",
        "Service",
        "Endpoints",
        "EndpointSlice",
        "ConfigMap",
        "Secret",
        "Node",
        "Event",
        "Deployment",
        "ReplicaSet",
        "Lease",
        "GitSource",
    ];
    let covered: Vec<String> = cases()
        .iter()
        .map(|(_, input, _)| input["kind"].as_str().unwrap().to_string())
        .collect();
    for kind in served {
        assert!(covered.iter().any(|k| k == kind), "no case for {kind}");
    }
}

#[test]
fn the_server_sets_no_admission_defaults_but_the_diff_knows_them() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}});
    let mut stored = pod.clone();
    apply_server_defaults(&mut stored);
    assert!(stored["spec"].get("serviceAccountName").is_none());
    let mut assumed = pod.clone();
    apply_defaults(&mut assumed);
    assert_eq!(assumed["spec"]["serviceAccountName"], "default");
    assert_eq!(assumed["spec"]["serviceAccount"], "default");
    assert_eq!(assumed["spec"]["tolerations"].as_array().unwrap().len(), 2);
}

#[test]
fn apply_then_strip_gives_back_the_manifest() {
    let manifests = cases()
        .into_iter()
        .map(|(_, input, _)| input)
        // A Secret's stringData becomes data, which strip does not turn back.
        .filter(|m| m["kind"] != "Secret");
    for manifest in manifests {
        let mut object = manifest.clone();
        apply_defaults(&mut object);
        strip_defaults(&mut object);
        // `status` is the server's; the diff drops it before comparing.
        if manifest.get("status").is_none()
            && let Some(o) = object.as_object_mut()
        {
            o.shift_remove("status");
        }
        assert_eq!(object, manifest, "{}", manifest["kind"]);
    }
}

#[test]
fn a_recreate_strategy_is_kept_by_strip() {
    let mut object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "w"}, "spec": {"strategy": {"type": "Recreate"}}});
    apply_defaults(&mut object);
    strip_defaults(&mut object);
    assert_eq!(object["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn requests_set_apart_from_limits_survive_strip() {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
            "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}}]}});
    let manifest = pod.clone();
    apply_defaults(&mut pod);
    strip_defaults(&mut pod);
    pod.as_object_mut().unwrap().shift_remove("status");
    assert_eq!(pod, manifest);
}
