//! Services end to end on real agents and real containers: pods on each node's pod network,
//! ClusterIP and NodePort traffic balanced by the agents' nftables rules, the agents' DNS,
//! readiness and deletion taking pods out of the rotation. Every test gives its agents their
//! own pod CIDRs (`--pod-cidr`), so tests running at once do not overlap.

pub mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::api::Server;
use support::cluster::*;
use support::docker::{TestScope, runtime};
use support::services::*;
use support::{accept, eventually, poll_every};

fn counts(bodies: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for b in bodies {
        *counts.entry(b.clone()).or_default() += 1;
    }
    counts
}

async fn ready_pod(client: &kube::Client, node: &str, name: &str, spec: serde_json::Value) -> Pod {
    create_pod(
        client,
        node,
        json!({"metadata": {"name": name, "labels": {"app": "web"}}, "spec": spec}),
    )
    .await;
    wait_pod(client, name, Duration::from_secs(60), "ready", all_ready).await
}

/// A Service without a selector and Endpoints written by hand (as users may do in
/// Kubernetes): the agent's rules follow the Endpoints, a NodePort answers from the host,
/// and a Service left without endpoints refuses connections at once.
#[tokio::test]
async fn hand_written_endpoints_are_balanced_followed_and_refused_when_empty() {
    require("nft", "--version");
    require("iptables", "--version");
    runtime().await;
    let scope = TestScope::new("svc-manual");
    let server = Server::start();
    let agent = Agent::start(
        &server,
        "svc-manual",
        &scope,
        &["--pod-cidr", "10.244.201.0/24"],
    );
    let client = admin(&server).await;
    let web1 = ready_pod(&client, &agent.node, "web-1", httpd_spec()).await;
    let web2 = ready_pod(&client, &agent.node, "web-2", httpd_spec()).await;
    let probe = create_pod(
        &client,
        &agent.node,
        json!({"metadata": {"name": "client"}, "spec": client_spec()}),
    )
    .await;
    let probe = wait_pod(
        &client,
        &probe.metadata.name.unwrap(),
        Duration::from_secs(60),
        "ready",
        all_ready,
    )
    .await;
    let (ip1, ip2) = (pod_ip(&web1), pod_ip(&web2));
    assert!(
        ip1.starts_with("10.244.201.") && ip2.starts_with("10.244.201."),
        "pods get addresses from the node's pod CIDR: {ip1} {ip2}"
    );
    let client_container = container_id(&probe, "client");

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "clusterIP": "10.96.201.10",
                 "ports": [{"name": "http", "port": 80, "targetPort": HTTP_PORT, "nodePort": 30201}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create the Service");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let subsets = |ips: &[&str]| {
        json!([{"addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                "ports": [{"name": "http", "port": HTTP_PORT, "protocol": "TCP"}]}])
    };
    let ep: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "web"}, "subsets": subsets(&[&ip1, &ip2])
    }))
    .unwrap();
    endpoints
        .create(&PostParams::default(), &ep)
        .await
        .expect("create the Endpoints");

    // Both backends answer through the ClusterIP and through the Service's DNS names.
    let seen = eventually(
        "both backends answering through the ClusterIP",
        Duration::from_secs(10),
        || async {
            let seen = counts(&fetch_many(&client_container, "http://10.96.201.10/", 20));
            accept(seen, |seen| seen.len() == 2 && !seen.contains_key("FAIL"))
        },
    )
    .await;
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        vec!["web-1".to_string(), "web-2".to_string()],
        "both backends answer through the ClusterIP"
    );
    for name in ["web", "web.default", "web.default.svc.cluster.local"] {
        let seen = counts(&fetch_many(
            &client_container,
            &format!("http://{name}/"),
            10,
        ));
        assert!(
            !seen.contains_key("FAIL") && seen.len() == 2,
            "http://{name}/ reaches both backends: {seen:?}"
        );
    }
    let (out, _, _) = exec_in(
        &client_container,
        "nslookup nosuch.default.svc.cluster.local 2>&1",
    );
    assert!(
        out.contains("NXDOMAIN"),
        "an unknown Service name is NXDOMAIN: {out}"
    );

    // The NodePort answers from the host, on its address and on 127.0.0.1.
    for host in [host_address(), "127.0.0.1".to_string()] {
        let url = format!("http://{host}:30201/");
        let body = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .unwrap();
        assert!(
            body.trim() == "web-1" || body.trim() == "web-2",
            "{url}: {body}"
        );
    }

    // A LoadBalancer Service answers on its status address and its own port (k3s ServiceLB
    // style: the address is the node's).
    let lb: Service = serde_json::from_value(json!({
        "metadata": {"name": "web-lb"},
        "spec": {"type": "LoadBalancer",
                 "ports": [{"name": "http", "port": 18099, "targetPort": HTTP_PORT}]}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &lb)
        .await
        .expect("create the LoadBalancer");
    let lb_ep: Endpoints = serde_json::from_value(json!({
        "metadata": {"name": "web-lb"}, "subsets": subsets(&[&ip1])
    }))
    .unwrap();
    endpoints
        .create(&PostParams::default(), &lb_ep)
        .await
        .expect("create its Endpoints");
    let ingress = eventually(
        "the LoadBalancer's status address",
        Duration::from_secs(20),
        || async {
            services
                .get("web-lb")
                .await
                .ok()?
                .status?
                .load_balancer?
                .ingress?
                .into_iter()
                .find_map(|i| i.ip)
        },
    )
    .await;
    let url = format!("http://{ingress}:18099/");
    let what = format!("GET {url} through the LoadBalancer address");
    let body = eventually(&what, Duration::from_secs(5), || async {
        reqwest::get(&url).await?.text().await
    })
    .await;
    assert_eq!(body.trim(), "web-1", "{url}");

    // Endpoints down to one pod: within 2 s the node's rules send only there. Timed from the
    // patch to the change of the ClusterIP's rules in the node's nftables table (read every
    // 10 ms), not around a `docker exec`; the traffic is checked after.
    let table = table_of_node(&agent.node);
    let backends = || nft_backends(&nft_table(&table), "10.96.201.10", 80);
    let (to1, to2) = (format!("{ip1}:{HTTP_PORT}"), format!("{ip2}:{HTTP_PORT}"));
    let mut both = vec![to1, to2.clone()];
    both.sort();
    assert_eq!(backends(), both, "the rules before");
    let changed = Instant::now();
    endpoints
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"subsets": subsets(&[&ip2])})),
        )
        .await
        .expect("patch the Endpoints");
    let followed = poll_every(
        Duration::from_millis(10),
        Duration::from_secs(2),
        || async { accept(backends(), |b| *b == [to2.clone()]) },
    )
    .await;
    let followed_after = changed.elapsed();
    if let Err(last) = followed {
        panic!("the ClusterIP's rules did not follow the Endpoints within 2 s: {last:?}");
    }
    println!(
        "rules followed the Endpoints in {:.0} ms",
        followed_after.as_secs_f64() * 1000.0
    );
    let seen = counts(&fetch_many(&client_container, "http://10.96.201.10/", 20));
    assert_eq!(seen, BTreeMap::from([("web-2".to_string(), 20)]));

    // No endpoints: refused at once (tcp reset), not a hang.
    endpoints
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"subsets": []})),
        )
        .await
        .expect("patch the Endpoints");
    let refused = eventually_output(
        || {
            exec_in(
                &client_container,
                "timeout 3 wget -qO- http://10.96.201.10/ 2>&1; echo rc=$?",
            )
            .0
        },
        "refused",
    )
    .await;
    assert!(
        refused.contains("refused"),
        "a Service without endpoints refuses: {refused}"
    );
    drop(agent);
}

/// When the engine first sent a signal to `container` (the agent's SIGTERM), after `since`.
fn kill_time(container: &str, since: std::time::SystemTime) -> Option<std::time::SystemTime> {
    let secs = since
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let out = std::process::Command::new("docker")
        .args([
            "events",
            "--since",
            &secs.to_string(),
            "--until",
            &until.to_string(),
        ])
        .args([
            "--filter",
            &format!("container={container}"),
            "--filter",
            "event=kill",
        ])
        .args(["--format", "{{.TimeNano}}"])
        .output()
        .expect("docker events");
    let nanos: u64 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Ready addresses of Endpoints `name` in `namespace`.
async fn ready_addresses(client: &kube::Client, namespace: &str, name: &str) -> Vec<String> {
    let api: Api<Endpoints> = Api::namespaced(client.clone(), namespace);
    let Ok(Some(ep)) = api.get_opt(name).await else {
        return Vec::new();
    };
    let mut ips: Vec<String> = ep
        .subsets
        .into_iter()
        .flatten()
        .flat_map(|s| s.addresses.into_iter().flatten())
        .map(|a| a.ip)
        .collect();
    ips.sort();
    ips
}

/// Issue 8, point 7: a 3-replica Deployment of `httpd` pods behind a Service on two of
/// three agents, the client on the third. All backends answer `http://web/`; a pod made
/// unready stops getting traffic within 2 s; a deleted pod drops no request; names resolve
/// across namespaces; a headless Service resolves to its pods; the NodePort answers.
#[tokio::test]
async fn a_deployment_behind_a_service_reached_from_a_node_without_backends() {
    require("nft", "--version");
    require("iptables", "--version");
    runtime().await;
    let scope = TestScope::new("svc-three");
    // The server hands out the pod CIDRs, from a range no other test uses.
    let server = Server::start_with(&["--cluster-cidr", "10.202.0.0/16"]);
    let agents: Vec<Agent> = ["svc-a", "svc-b", "svc-c"]
        .into_iter()
        .map(|n| Agent::start(&server, n, &scope, &[]))
        .collect();
    let client = admin(&server).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for n in ["svc-a", "svc-b"] {
        nodes
            .patch(
                n,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"labels": {"web": "yes"}}})),
            )
            .await
            .expect("label the node");
    }
    let mut template = httpd_spec();
    template["nodeSelector"] = json!({"web": "yes"});
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": template}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    for svc in [
        json!({"metadata": {"name": "web"},
               "spec": {"type": "NodePort", "selector": {"app": "web"},
                        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
        json!({"metadata": {"name": "web-headless"},
               "spec": {"clusterIP": "None", "selector": {"app": "web"},
                        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}),
    ] {
        let svc: Service = serde_json::from_value(svc).unwrap();
        services
            .create(&PostParams::default(), &svc)
            .await
            .expect("create the Service");
    }
    let probe = create_pod(
        &client,
        "svc-c",
        json!({"metadata": {"name": "client"}, "spec": client_spec()}),
    )
    .await;
    let probe = wait_pod(
        &client,
        &probe.metadata.name.unwrap(),
        Duration::from_secs(60),
        "ready",
        all_ready,
    )
    .await;
    let client_container = container_id(&probe, "client");

    // Three ready endpoints, none on the client's node.
    let ready = eventually("3 ready endpoints", Duration::from_secs(90), || async {
        let ips = ready_addresses(&client, "default", "web").await;
        accept(ips, |ips| ips.len() == 3)
    })
    .await;
    let client_cidr = nodes
        .get("svc-c")
        .await
        .expect("get node svc-c")
        .spec
        .and_then(|s| s.pod_cidr)
        .expect("the server gave svc-c a pod CIDR");
    assert!(client_cidr.starts_with("10.202."), "{client_cidr}");
    let client_prefix = client_cidr.trim_end_matches("0/24");
    assert!(
        pod_ip(&probe).starts_with(client_prefix)
            && ready.iter().all(|ip| !ip.starts_with(client_prefix)),
        "the client runs on svc-c ({client_cidr}) and no backend does: {ready:?}"
    );

    // 60 fetches of http://web/ from the third node: all three backends answer.
    let seen = eventually(
        "60 fetches of http://web/ reaching all 3 backends",
        Duration::from_secs(10),
        || async {
            let seen = counts(&fetch_many(&client_container, "http://web/", 60));
            accept(seen, |seen| seen.len() == 3 && !seen.contains_key("FAIL"))
        },
    )
    .await;
    assert!(
        seen.len() == 3 && !seen.contains_key("FAIL") && seen.values().sum::<usize>() == 60,
        "60 fetches of http://web/ reach all 3 backends: {seen:?}"
    );
    println!("60 fetches of http://web/: {seen:?}");

    // A headless Service resolves to its ready pod IPs.
    let (out, _, _) = exec_in(
        &client_container,
        "nslookup web-headless.default.svc.cluster.local 2>&1",
    );
    for ip in &ready {
        assert!(
            out.contains(ip.as_str()),
            "headless answer lists {ip}: {out}"
        );
    }

    // Across namespaces: a Service in `shop` by SVC.NS and SVC.NS.svc.cluster.local.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap(),
        )
        .await
        .expect("create namespace shop");
    let shop_services: Api<Service> = Api::namespaced(client.clone(), "shop");
    shop_services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "api"},
                "spec": {"ports": [{"name": "http", "port": 80}]}}))
            .unwrap(),
        )
        .await
        .expect("create shop/api");
    let shop_endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "shop");
    shop_endpoints
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "api"},
                "subsets": [{"addresses": [{"ip": ready[0]}],
                             "ports": [{"name": "http", "port": HTTP_PORT}]}]}))
            .unwrap(),
        )
        .await
        .expect("create shop/api endpoints");
    for name in ["api.shop", "api.shop.svc.cluster.local"] {
        // Each try is 3 fetches of up to 3 s: room for a few.
        let what = format!("http://{name}/ answering from namespace default");
        eventually(&what, Duration::from_secs(30), || async {
            let bodies = fetch_many(&client_container, &format!("http://{name}/"), 3);
            accept(bodies, |bodies| !bodies.iter().any(|b| b == "FAIL"))
        })
        .await;
    }

    // The NodePort answers from the host.
    let svc = services.get("web").await.expect("get the Service");
    let node_port = svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0]
        .node_port
        .expect("an allocated nodePort");
    let url = format!("http://{}:{node_port}/", host_address());
    let body = reqwest::get(&url)
        .await
        .expect("NodePort reachable")
        .text()
        .await
        .unwrap();
    assert!(body.trim().starts_with("web-"), "{url}: {body}");

    // One pod made unready leaves the rotation: its probe (every second, one failure is
    // enough) notices within 1 s, the rules follow within 2 s more. Timed from the probe
    // file's removal to the change of the ClusterIP's rules on the client's node (read every
    // 10 ms), with three times the probe period for the probe; the traffic is checked after.
    let cluster_ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .expect("web has a ClusterIP");
    let client_table = table_of_node("svc-c");
    let web_backends = || nft_backends(&nft_table(&client_table), &cluster_ip, 80);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let web_pods: Vec<Pod> = pods
        .list(&kube::api::ListParams::default().labels("app=web"))
        .await
        .expect("list pods")
        .items;
    // Not the pod shop/api sends to, so the rules of `web` alone decide where it goes.
    let victim = web_pods
        .iter()
        .find(|p| p.metadata.deletion_timestamp.is_none() && pod_ip(p) != ready[0])
        .expect("a web pod");
    let victim_name = victim.metadata.name.clone().unwrap();
    let victim_container = container_id(victim, "httpd");
    let victim_backend = format!("{}:{HTTP_PORT}", pod_ip(victim));
    assert!(
        web_backends().contains(&victim_backend),
        "the rules send to {victim_backend} first: {:?}",
        web_backends()
    );
    let (_, err, ok) = exec_in(&victim_container, "rm /tmp/ready");
    assert!(ok, "rm /tmp/ready: {err}");
    let made_unready = Instant::now();
    let left = poll_every(
        Duration::from_millis(10),
        Duration::from_secs(5),
        || async { accept(web_backends(), |b| !b.contains(&victim_backend)) },
    )
    .await;
    let left_after = made_unready.elapsed();
    if let Err(rules) = left {
        panic!("the unready pod {victim_name} is still in the client's rules 5 s later: {rules:?}");
    }
    let seen = counts(&fetch_many(&client_container, "http://web/", 30));
    assert!(
        !seen.contains_key(&victim_name) && !seen.contains_key("FAIL"),
        "{seen:?}"
    );
    println!(
        "an unready pod left the client's rules {:.0} ms after its probe file went",
        left_after.as_secs_f64() * 1000.0
    );
    exec_in(&victim_container, "touch /tmp/ready");

    // Deleting a ready backend while requests flow drops none: the pod leaves the rules
    // before it gets SIGTERM. The requests run in a loop in the client until told to stop,
    // each answer a line of /tmp/fetches, from before the delete until after the SIGTERM.
    eventually("the pod ready again", Duration::from_secs(30), || async {
        ready_addresses(&client, "default", "web").await.len() == 3
    })
    .await;
    let victim_ip = pod_ip(victim);
    exec_in(&client_container, "rm -f /tmp/stop /tmp/fetches");
    let loader = client_container.clone();
    let load = tokio::task::spawn_blocking(move || {
        exec_in(
            &loader,
            "while [ ! -f /tmp/stop ]; do \
             out=$(timeout 3 wget -qO- http://web/ 2>/dev/null) && echo \"$out\" >> /tmp/fetches \
             || echo FAIL >> /tmp/fetches; done",
        )
    });
    let fetched = || {
        exec_in(&client_container, "cat /tmp/fetches 2>/dev/null")
            .0
            .lines()
            .count()
    };
    eventually("requests flowing", Duration::from_secs(30), || async {
        fetched() >= 5
    })
    .await;
    let deleted_at = std::time::SystemTime::now();
    pods.delete(&victim_name, &Default::default())
        .await
        .expect("delete a web pod");
    // When the client's node stopped sending to the pod, and when the pod got SIGTERM.
    let dropped = poll_every(
        Duration::from_millis(10),
        Duration::from_secs(5),
        || async {
            let rules = nft_table(&client_table);
            accept(rules, |rules| !rules.contains(&format!("{victim_ip}:")))
        },
    )
    .await;
    let rules_dropped = std::time::SystemTime::now();
    if let Err(rules) = dropped {
        let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
        panic!(
            "the client's node still sends to the deleted pod {victim_ip} 5 s later: {rules}\nEndpoints: {:?}",
            endpoints.get("web").await.map(|e| e.subsets)
        );
    }
    let killed = eventually(
        "the deleted pod's container stopped",
        Duration::from_secs(30),
        || async { kill_time(&victim_container, deleted_at) },
    )
    .await;
    let at_kill = fetched();
    eventually(
        "requests flowing after the SIGTERM",
        Duration::from_secs(30),
        || async { fetched() >= at_kill + 5 },
    )
    .await;
    exec_in(&client_container, "touch /tmp/stop");
    let (_, err, ok) = load.await.unwrap();
    assert!(ok, "the fetch loop failed: {err}");
    let bodies: Vec<String> = exec_in(&client_container, "cat /tmp/fetches")
        .0
        .lines()
        .map(str::to_string)
        .collect();
    let seen = counts(&bodies);
    assert!(
        !seen.contains_key("FAIL"),
        "no request fails while a backend is deleted: {seen:?}"
    );
    assert!(
        killed > rules_dropped,
        "SIGTERM came {:?} before the client's node stopped sending to the pod",
        rules_dropped.duration_since(killed).unwrap_or_default()
    );
    println!(
        "{} requests; the deleted pod left the client's rules {:.0} ms after the delete and got SIGTERM {:.0} ms after that",
        bodies.len(),
        rules_dropped
            .duration_since(deleted_at)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0,
        killed
            .duration_since(rules_dropped)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0
    );
    drop(agents);
}
