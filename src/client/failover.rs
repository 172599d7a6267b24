//! A client of several masters: `--server URL,URL…` and the masters the `default/kubernetes`
//! Endpoints name. Each request goes to the master that answered last; when that one cannot
//! be reached (the connection is refused, or cannot be made in time) the request moves on to
//! the next master, so a client such as `berth agent` outlives the loss of a master without
//! restarting anything. A request is sent again only when that is safe: when no connection
//! was made, or when it is a read whose connection broke; never a write whose answer was lost.
//!
//! Each master has its own `kube::Client` (its own connection pool); the client callers use
//! is one `kube::Client` over a service that routes to them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response, Uri};
use k8s_openapi::api::core::v1::Endpoints;
use kube::client::Body;

use super::ClientError;

/// How long a connection to one master may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The masters a client knows, and the client that routes between them.
#[derive(Clone)]
pub struct Masters {
    shared: Arc<Shared>,
    client: kube::Client,
}

struct Shared {
    /// Auth, CA and timeouts for every master; only the URL differs.
    template: kube::Config,
    /// Given on the command line (or the kubeconfig's): always kept.
    configured: Vec<Uri>,
    known: RwLock<Known>,
    /// How many times requests moved to another master.
    switches: AtomicU64,
}

struct Known {
    servers: Vec<Server>,
    /// The URL of the master that answered last.
    current: Uri,
}

#[derive(Clone)]
struct Server {
    url: Uri,
    client: kube::Client,
}

impl Masters {
    /// A client of `urls` (at least one) with `template`'s settings.
    pub fn new(template: kube::Config, urls: Vec<Uri>) -> Result<Masters, ClientError> {
        let mut template = template;
        template.connect_timeout = Some(
            template
                .connect_timeout
                .map_or(CONNECT_TIMEOUT, |t| t.min(CONNECT_TIMEOUT)),
        );
        let servers = urls
            .iter()
            .map(|url| server(&template, url))
            .collect::<Result<Vec<_>, _>>()?;
        let current = urls
            .first()
            .cloned()
            .ok_or_else(|| ClientError::ServerUrl { url: String::new() })?;
        let default_namespace = template.default_namespace.clone();
        let shared = Arc::new(Shared {
            template,
            configured: urls,
            known: RwLock::new(Known { servers, current }),
            switches: AtomicU64::new(0),
        });
        let client = kube::Client::new(Route(shared.clone()), default_namespace);
        Ok(Masters { shared, client })
    }

    /// The client that sends each request to a live master.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The URLs of every master known, the one in use first.
    pub fn urls(&self) -> Vec<String> {
        let known = self.shared.known.read().expect("masters lock");
        let mut urls: Vec<String> = vec![known.current.to_string()];
        urls.extend(
            known
                .servers
                .iter()
                .filter(|s| s.url != known.current)
                .map(|s| s.url.to_string()),
        );
        urls
    }

    /// How many times requests moved to another master.
    pub fn switches(&self) -> u64 {
        self.shared.switches.load(Ordering::Relaxed)
    }

    /// Reads the `default/kubernetes` Endpoints and knows the masters it names from now on
    /// (beside the configured ones); masters no longer named are forgotten. Returns how many
    /// masters are known.
    pub async fn learn(&self) -> Result<usize, kube::Error> {
        let endpoints: Endpoints = kube::Api::namespaced(self.client(), "default")
            .get("kubernetes")
            .await?;
        let scheme = self
            .shared
            .configured
            .first()
            .and_then(Uri::scheme_str)
            .unwrap_or("https")
            .to_string();
        let mut learned = Vec::new();
        for subset in endpoints.subsets.iter().flatten() {
            let Some(port) = subset.ports.iter().flatten().next().map(|p| p.port) else {
                continue;
            };
            for address in subset.addresses.iter().flatten() {
                let host = if address.ip.contains(':') {
                    format!("[{}]", address.ip)
                } else {
                    address.ip.clone()
                };
                if let Ok(url) = format!("{scheme}://{host}:{port}/").parse::<Uri>() {
                    learned.push(url);
                }
            }
        }
        Ok(self.shared.know(learned))
    }

    /// Learns the masters every `interval` until dropped (a task of its own).
    pub async fn keep_learning(self, interval: Duration) {
        loop {
            match self.learn().await {
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the masters from the kubernetes Endpoints")
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}

impl std::fmt::Debug for Masters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masters")
            .field("urls", &self.urls())
            .finish()
    }
}

fn server(template: &kube::Config, url: &Uri) -> Result<Server, ClientError> {
    let mut config = template.clone();
    config.cluster_url = url.clone();
    let client = kube::Client::try_from(config).map_err(ClientError::Client)?;
    Ok(Server {
        url: url.clone(),
        client,
    })
}

/// The same URL, whether or not it was written with a trailing `/`.
fn same(a: &Uri, b: &Uri) -> bool {
    a.scheme() == b.scheme()
        && a.authority() == b.authority()
        && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
}

impl Shared {
    /// The masters to try, in order, starting with the one in use.
    fn order(&self) -> Vec<Server> {
        let known = self.known.read().expect("masters lock");
        let start = known
            .servers
            .iter()
            .position(|s| same(&s.url, &known.current))
            .unwrap_or(0);
        let mut order = known.servers[start..].to_vec();
        order.extend_from_slice(&known.servers[..start]);
        order
    }

    /// `url` answered: it is the master in use from now on.
    fn answered(&self, url: &Uri) {
        let mut known = self.known.write().expect("masters lock");
        if !same(&known.current, url) {
            tracing::warn!(from = %known.current, to = %url, "moved to another master");
            known.current = url.clone();
            self.switches.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Knows the configured masters and `learned`; returns how many.
    fn know(&self, learned: Vec<Uri>) -> usize {
        let mut known = self.known.write().expect("masters lock");
        let mut wanted: Vec<Uri> = self.configured.clone();
        for url in learned {
            if !wanted.iter().any(|w| same(w, &url)) {
                wanted.push(url);
            }
        }
        let mut servers = Vec::with_capacity(wanted.len());
        for url in &wanted {
            if let Some(s) = known.servers.iter().find(|s| same(&s.url, url)) {
                servers.push(s.clone());
                continue;
            }
            match server(&self.template, url) {
                Ok(s) => {
                    tracing::info!(master = %url, "learned a master from the kubernetes Endpoints");
                    servers.push(s);
                }
                Err(e) => {
                    tracing::warn!(master = %url, error = %e, "cannot make a client of a master")
                }
            }
        }
        known.servers = servers;
        known.servers.len()
    }

    async fn send(&self, request: Request<Body>) -> Result<Response<Body>, kube::Error> {
        let (parts, body) = request.into_parts();
        let read = parts.method == Method::GET || parts.method == Method::HEAD;
        let mut body = Some(body);
        let mut failure = None;
        for server in self.order() {
            // A body that cannot be copied (a stream) is sent once, to the first master.
            let Some(this) = body
                .as_ref()
                .and_then(Body::try_clone)
                .or_else(|| body.take())
            else {
                break;
            };
            let mut request = Request::new(this);
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();
            match server.client.send(request).await {
                Ok(response) => {
                    self.answered(&server.url);
                    return Ok(response);
                }
                Err(e) if not_connected(&e) || (read && broken(&e)) => {
                    tracing::debug!(master = %server.url, error = %e, "a master did not answer; trying the next");
                    failure = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(failure
            .unwrap_or_else(|| kube::Error::Service("no master to send the request to".into())))
    }
}

/// The errors beneath `e`, `e` first.
fn chain(e: &kube::Error) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
}

/// No connection could be made (refused, unreachable, timed out, or the TLS handshake
/// failed): nothing was sent, so the request may go to another master.
fn not_connected(e: &kube::Error) -> bool {
    chain(e).any(|e| {
        e.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(hyper_util::client::legacy::Error::is_connect)
    })
}

/// The connection broke before an answer came (the master died mid-request).
fn broken(e: &kube::Error) -> bool {
    chain(e).any(|e| {
        e.downcast_ref::<hyper::Error>().is_some()
            || e.downcast_ref::<hyper_util::client::legacy::Error>()
                .is_some()
            || e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                )
            })
    })
}

/// The service under the callers' `kube::Client`.
#[derive(Clone)]
struct Route(Arc<Shared>);

impl tower::Service<Request<Body>> for Route {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let shared = self.0.clone();
        Box::pin(async move { shared.send(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn masters(urls: &[&str]) -> Masters {
        let urls: Vec<Uri> = urls.iter().map(|u| u.parse().unwrap()).collect();
        Masters::new(kube::Config::new(urls[0].clone()), urls).unwrap()
    }

    /// A master on loopback that answers every request with an empty NamespaceList.
    async fn answering() -> (Uri, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: Uri = format!("http://{}/", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut stream = stream;
                    let mut buf = vec![0u8; 4096];
                    let _ = stream.read(&mut buf).await;
                    let body =
                        r#"{"apiVersion":"v1","kind":"NamespaceList","metadata":{},"items":[]}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, task)
    }

    /// A loopback port nothing listens on.
    async fn refusing() -> Uri {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        url.parse().unwrap()
    }

    #[tokio::test]
    async fn a_request_moves_on_from_a_master_that_refuses_and_stays_with_the_one_that_answered() {
        let dead = refusing().await;
        let (live, _server) = answering().await;
        let masters = masters(&[&dead.to_string(), &live.to_string()]).await;
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(masters.client());
        namespaces.list(&Default::default()).await.unwrap();
        assert_eq!(masters.switches(), 1);
        assert!(same(&masters.urls()[0].parse().unwrap(), &live));
        // The next request goes straight to the master in use.
        namespaces.list(&Default::default()).await.unwrap();
        assert_eq!(masters.switches(), 1);
    }

    #[tokio::test]
    async fn when_no_master_answers_the_error_is_the_last_refusal() {
        let a = refusing().await;
        let b = refusing().await;
        let masters = masters(&[&a.to_string(), &b.to_string()]).await;
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(masters.client());
        let e = namespaces.list(&Default::default()).await.unwrap_err();
        assert!(not_connected(&e), "{e:?}");
        assert_eq!(masters.switches(), 0);
    }

    #[tokio::test]
    async fn learned_masters_join_the_configured_ones_and_leave_when_no_longer_named() {
        let masters = masters(&["https://10.0.0.1:6443"]).await;
        let n = masters.shared.know(vec![
            "https://10.0.0.1:6443/".parse().unwrap(),
            "https://10.0.0.2:6443/".parse().unwrap(),
        ]);
        assert_eq!(n, 2);
        let n = masters
            .shared
            .know(vec!["https://10.0.0.3:6443/".parse().unwrap()]);
        assert_eq!(n, 2);
        let urls = masters.urls();
        assert!(urls[0].contains("10.0.0.1"), "{urls:?}");
        assert!(urls[1].contains("10.0.0.3"), "{urls:?}");
    }
}
