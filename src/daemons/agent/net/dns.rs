//! The cluster DNS the agent serves to its pods on the pod network's gateway address, UDP
//! and TCP port 53: `SVC.NS.svc.cluster.local` (and, through the pods' search path, `SVC`
//! and `SVC.NS`) answers the Service's ClusterIP, or a headless Service's ready pod IPs;
//! other names under `cluster.local` are NXDOMAIN; everything else is forwarded to the
//! resolvers of the host's `/etc/resolv.conf`. Deciding the answer is pure ([`answer`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// How long resolvers may cache a cluster answer, in seconds.
const TTL: u32 = 5;

/// What the server answers for one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// These addresses (type A).
    Addresses(Vec<Ipv4Addr>),
    /// The name exists but has no records of the asked type.
    NoData,
    /// No such name in the cluster.
    NxDomain,
    /// Not a cluster name: ask the host's resolvers.
    Forward,
}

/// The addresses a Service name stands for: its ClusterIP, or for a headless Service its
/// ready endpoints' addresses. `None` when the Service does not exist.
pub fn service_addresses(service: &Service, endpoints: Option<&Endpoints>) -> Vec<Ipv4Addr> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    match spec.cluster_ip.as_deref() {
        Some("None") => {
            let mut ips: Vec<Ipv4Addr> = endpoints
                .and_then(|e| e.subsets.as_ref())
                .into_iter()
                .flatten()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter_map(|a| a.ip.parse().ok())
                .collect();
            ips.sort();
            ips.dedup();
            ips
        }
        Some(ip) => ip.parse().ok().into_iter().collect(),
        None => Vec::new(),
    }
}

/// The answer to `name` (any case, with or without the final dot) of type `kind`, with
/// `lookup(namespace, service)` giving a Service's addresses (pure).
pub fn answer(
    name: &str,
    kind: RecordType,
    lookup: impl Fn(&str, &str) -> Option<Vec<Ipv4Addr>>,
) -> Answer {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let Some(rest) = name
        .strip_suffix(CLUSTER_DOMAIN)
        .filter(|r| r.is_empty() || r.ends_with('.'))
    else {
        return Answer::Forward;
    };
    let labels: Vec<&str> = rest.trim_end_matches('.').split('.').collect();
    let found = match labels.as_slice() {
        [service, namespace, "svc"] => lookup(namespace, service),
        _ => None,
    };
    match found {
        None => Answer::NxDomain,
        Some(ips) if kind == RecordType::A && !ips.is_empty() => Answer::Addresses(ips),
        Some(_) => Answer::NoData,
    }
}

/// Where the server finds Services and Endpoints.
#[derive(Clone)]
pub struct ServiceDirectory {
    pub services: Store<Service>,
    pub endpoints: Store<Endpoints>,
}

impl ServiceDirectory {
    fn lookup(&self, namespace: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        let service = self.services.get(&ObjectRef::new(name).within(namespace))?;
        let endpoints = self.endpoints.get(&ObjectRef::new(name).within(namespace));
        Some(service_addresses(&service, endpoints.as_deref()))
    }
}

/// The resolvers named in a resolv.conf text, port 53.
pub fn upstreams(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The DNS server of one node.
pub struct DnsServer {
    directory: ServiceDirectory,
    upstreams: Vec<SocketAddr>,
}

fn reply_to(request: &Message) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true);
    for q in request.queries() {
        reply.add_query(q.clone());
    }
    reply
}

impl DnsServer {
    /// A server answering from `directory` and forwarding to `upstreams`.
    pub fn new(directory: ServiceDirectory, upstreams: Vec<SocketAddr>) -> DnsServer {
        DnsServer {
            directory,
            upstreams,
        }
    }

    /// The response to one wire-format request, or `None` for garbage not worth answering.
    pub async fn handle(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let request = Message::from_vec(bytes).ok()?;
        if request.message_type() != MessageType::Query {
            return None;
        }
        let mut reply = reply_to(&request);
        let question = match request.queries() {
            [q] if request.op_code() == OpCode::Query => q,
            _ => {
                reply.set_response_code(ResponseCode::NotImp);
                return reply.to_vec().ok();
            }
        };
        let name = question.name().to_ascii();
        match answer(&name, question.query_type(), |ns, svc| {
            self.directory.lookup(ns, svc)
        }) {
            Answer::Forward => {
                if let Some(bytes) = self.forward(bytes).await {
                    return Some(bytes);
                }
                reply.set_response_code(ResponseCode::ServFail);
            }
            Answer::NxDomain => {
                reply
                    .set_authoritative(true)
                    .set_response_code(ResponseCode::NXDomain);
            }
            Answer::NoData => {
                reply.set_authoritative(true);
            }
            Answer::Addresses(ips) => {
                reply.set_authoritative(true);
                for ip in ips {
                    reply.add_answer(Record::from_rdata(
                        question.name().clone(),
                        TTL,
                        RData::A(A(ip)),
                    ));
                }
            }
        }
        reply.to_vec().ok()
    }

    /// Sends the request as it came to each upstream in turn; the first answer wins.
    async fn forward(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        for upstream in &self.upstreams {
            let bind: SocketAddr = if upstream.is_ipv4() {
                "0.0.0.0:0".parse().expect("address")
            } else {
                "[::]:0".parse().expect("address")
            };
            let Ok(socket) = UdpSocket::bind(bind).await else {
                continue;
            };
            if socket.connect(upstream).await.is_err() || socket.send(bytes).await.is_err() {
                continue;
            }
            let mut buf = vec![0u8; 65535];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf)).await
            {
                buf.truncate(n);
                return Some(buf);
            }
        }
        None
    }
}

/// Why the DNS server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve DNS on {addr} ({protocol})")]
pub struct DnsBindError {
    pub addr: SocketAddr,
    pub protocol: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Binds UDP and TCP `addr`; the returned future serves until dropped.
pub async fn serve(
    server: DnsServer,
    addr: SocketAddr,
) -> Result<impl Future<Output = ()>, DnsBindError> {
    let udp = UdpSocket::bind(addr).await.map_err(|source| DnsBindError {
        addr,
        protocol: "udp",
        source,
    })?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|source| DnsBindError {
            addr,
            protocol: "tcp",
            source,
        })?;
    let server = Arc::new(server);
    Ok(async move {
        let udp = Arc::new(udp);
        let mut tasks = tokio::task::JoinSet::new();
        let mut buf = vec![0u8; 4096];
        loop {
            tokio::select! {
                received = udp.recv_from(&mut buf) => {
                    let Ok((n, peer)) = received else { continue };
                    let request = buf[..n].to_vec();
                    let (server, udp) = (server.clone(), udp.clone());
                    tasks.spawn(async move {
                        if let Some(reply) = server.handle(&request).await {
                            let _ = udp.send_to(&reply, peer).await;
                        }
                    });
                }
                accepted = tcp.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let server = server.clone();
                    tasks.spawn(async move { serve_tcp(&server, stream).await });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    })
}

/// DNS over TCP: two-byte length prefixes, several queries per connection.
async fn serve_tcp(server: &DnsServer, mut stream: TcpStream) {
    loop {
        let mut len = [0u8; 2];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut len)).await;
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut request).await.is_err() {
            return;
        }
        let Some(reply) = server.handle(&request).await else {
            return;
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_all(&n.to_be_bytes()).await.is_err()
            || stream.write_all(&reply).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(ns: &str, svc: &str) -> Option<Vec<Ipv4Addr>> {
        match (ns, svc) {
            ("default", "web") => Some(vec![Ipv4Addr::new(10, 96, 0, 10)]),
            ("default", "empty") => Some(vec![]),
            _ => None,
        }
    }

    #[test]
    fn service_names_answer_their_addresses() {
        assert_eq!(
            answer("WEB.default.svc.cluster.local.", RecordType::A, lookup),
            Answer::Addresses(vec![Ipv4Addr::new(10, 96, 0, 10)])
        );
        assert_eq!(
            answer("web.default.svc.cluster.local", RecordType::AAAA, lookup),
            Answer::NoData
        );
        assert_eq!(
            answer("empty.default.svc.cluster.local", RecordType::A, lookup),
            Answer::NoData
        );
    }

    #[test]
    fn unknown_cluster_names_are_nxdomain_and_others_forwarded() {
        // What the search path produces for `web.default` before it finds the right suffix.
        assert_eq!(
            answer(
                "web.default.default.svc.cluster.local.",
                RecordType::A,
                lookup
            ),
            Answer::NxDomain
        );
        assert_eq!(
            answer("cluster.local.", RecordType::A, lookup),
            Answer::NxDomain
        );
        assert_eq!(
            answer("example.com.", RecordType::A, lookup),
            Answer::Forward
        );
        assert_eq!(
            answer("notcluster.local.", RecordType::A, lookup),
            Answer::Forward
        );
    }

    #[test]
    fn headless_services_answer_ready_pod_addresses() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None"}
        }))
        .unwrap();
        let ep: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.244.1.3"}, {"ip": "10.244.0.2"}],
                         "notReadyAddresses": [{"ip": "10.244.0.9"}]}]
        }))
        .unwrap();
        assert_eq!(
            service_addresses(&svc, Some(&ep)),
            vec![Ipv4Addr::new(10, 244, 0, 2), Ipv4Addr::new(10, 244, 1, 3)]
        );
    }

    #[test]
    fn resolv_conf_nameservers_become_upstreams() {
        let text =
            "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver ::1\noptions ndots:1\n";
        assert_eq!(
            upstreams(text),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    fn query(name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7)
            .set_recursion_desired(true)
            .add_query(hickory_proto::op::Query::query(
                hickory_proto::rr::Name::from_ascii(name).unwrap(),
                RecordType::A,
            ));
        m.to_vec().unwrap()
    }

    fn empty_directory() -> ServiceDirectory {
        ServiceDirectory {
            services: kube::runtime::reflector::store::<Service>().0,
            endpoints: kube::runtime::reflector::store::<Endpoints>().0,
        }
    }

    #[tokio::test]
    async fn other_names_are_forwarded_and_the_upstream_answer_relayed() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            let (n, peer) = upstream.recv_from(&mut buf).await.unwrap();
            let request = Message::from_vec(&buf[..n]).unwrap();
            let mut reply = reply_to(&request);
            reply.set_response_code(ResponseCode::NXDomain);
            upstream
                .send_to(&reply.to_vec().unwrap(), peer)
                .await
                .unwrap();
        });
        let server = DnsServer::new(empty_directory(), vec![upstream_addr]);
        let reply = server.handle(&query("outside.example.")).await.unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.id(), 7);
        // The upstream's NXDOMAIN, not one the server made up: it is not authoritative.
        assert_eq!(reply.response_code(), ResponseCode::NXDomain);
        assert!(!reply.authoritative());
    }

    #[tokio::test]
    async fn an_unreachable_upstream_is_servfail() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = DnsServer::new(empty_directory(), vec![silent.local_addr().unwrap()]);
        let reply = server.handle(&query("outside.example.")).await.unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.response_code(), ResponseCode::ServFail);
        drop(silent);
    }

    #[tokio::test]
    async fn cluster_names_are_answered_without_asking_upstream() {
        let server = DnsServer::new(empty_directory(), vec![]);
        let reply = server
            .handle(&query("web.default.svc.cluster.local."))
            .await
            .unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.response_code(), ResponseCode::NXDomain);
        assert!(reply.authoritative());
    }
}
