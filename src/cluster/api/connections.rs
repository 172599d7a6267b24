//! Connection accounting of the API server: how many connections are open per client address
//! and in total, with a share of the total kept for authenticated clients, and the requests
//! open on each connection so an idle one can be closed.
//!
//! A connection is anonymous until a request on it authenticates (agent or admin token).
//! Anonymous connections are capped per client address and, together, at the total minus the
//! reserved share; a connection that authenticates leaves both anonymous counts, so a flood
//! of idle connections from anywhere never takes the place of an agent's open connection.
//! At a cap the server closes the new connection at once (the process keeps its files),
//! except that when the anonymous share is full a new connection takes the place of the
//! oldest anonymous one that has not sent a request yet (which is closed): idle connections
//! cannot hold the server's door shut against a client that will use its connection.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The limits on connections, with the defaults of `berth server`.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// A TLS handshake (or, over plain HTTP, the first bytes) must finish within this.
    pub handshake_timeout: Duration,
    /// A request's headers must arrive within this (HTTP/1).
    pub header_timeout: Duration,
    /// A connection with no open request for this long is closed.
    pub idle_timeout: Duration,
    /// Concurrent connections in total.
    pub max_total: usize,
    /// Concurrent anonymous connections from one client address.
    pub max_per_address: usize,
    /// Of `max_total`, the connections only authenticated clients may hold.
    pub reserved: usize,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits::with_total(10_000)
    }
}

impl ConnectionLimits {
    /// The defaults with a total cap of `max_total`, a tenth of it reserved.
    pub fn with_total(max_total: usize) -> ConnectionLimits {
        let max_total = max_total.max(2);
        ConnectionLimits {
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(90),
            max_total,
            max_per_address: 1_000.min(max_total),
            reserved: (max_total / 10).max(1),
        }
    }
}

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds `max_per_address` anonymous connections.
    Address,
    /// The anonymous share (or the total) is full.
    Total,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Address => "per-address",
            Refused::Total => "total",
        }
    }
}

#[derive(Debug, Default)]
struct Counts {
    anonymous: usize,
    authenticated: usize,
    /// Anonymous connections per client address.
    per_address: HashMap<IpAddr, usize>,
    /// Anonymous connections in the order they came, to evict the oldest unused one.
    arrivals: VecDeque<Weak<Connection>>,
}

impl Counts {
    /// Takes the place of the oldest anonymous connection without a request, if any. The
    /// connections it looked at go to `seen`, to be dropped once the lock is released (the
    /// last reference's drop takes the lock).
    fn evict_oldest_unused(&mut self, seen: &mut Vec<Arc<Connection>>) -> bool {
        while let Some(oldest) = self.arrivals.pop_front() {
            let Some(c) = oldest.upgrade() else { continue };
            let evictable = !c.used.load(Ordering::Acquire)
                && !c.authenticated.load(Ordering::Acquire)
                && !c.evicted.swap(true, Ordering::AcqRel);
            if evictable {
                c.registry.evicted.fetch_add(1, Ordering::Relaxed);
                self.anonymous -= 1;
                forget_one(&mut self.per_address, c.peer);
                c.evict.notify_one();
            }
            seen.push(c);
            if evictable {
                return true;
            }
        }
        false
    }
}

/// All open connections of one server.
#[derive(Debug)]
pub struct Connections {
    pub limits: ConnectionLimits,
    counts: Mutex<Counts>,
    refused: AtomicU64,
    evicted: Arc<AtomicU64>,
    /// Open connections (both kinds): zero once a drain is done.
    open: tokio::sync::watch::Sender<usize>,
}

impl Connections {
    pub fn new(limits: ConnectionLimits) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            counts: Mutex::default(),
            refused: AtomicU64::new(0),
            evicted: Arc::default(),
            open: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Admits a new connection from `peer`, or says which cap refuses it.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Arc<Connection>, Refused> {
        let mut seen = Vec::new();
        let admitted = self.admit_locked(peer, &mut seen);
        drop(seen);
        admitted
    }

    fn admit_locked(
        self: &Arc<Self>,
        peer: IpAddr,
        seen: &mut Vec<Arc<Connection>>,
    ) -> Result<Arc<Connection>, Refused> {
        let mut counts = self.counts.lock().expect("connections lock");
        let anonymous_cap = self.limits.max_total - self.limits.reserved.min(self.limits.max_total);
        let from_peer = counts.per_address.get(&peer).copied().unwrap_or(0);
        let full = |c: &Counts| {
            c.anonymous >= anonymous_cap || c.anonymous + c.authenticated >= self.limits.max_total
        };
        let refused = if from_peer >= self.limits.max_per_address {
            Some(Refused::Address)
        } else if full(&counts) && (!counts.evict_oldest_unused(seen) || full(&counts)) {
            // Full, and no unused connection to give way (or still full after one did).
            Some(Refused::Total)
        } else {
            None
        };
        if let Some(why) = refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(why);
        }
        counts.anonymous += 1;
        *counts.per_address.entry(peer).or_default() += 1;
        let connection = Arc::new(Connection {
            registry: self.clone(),
            peer,
            authenticated: AtomicBool::new(false),
            used: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            evict: tokio::sync::Notify::new(),
            abort: tokio::sync::Notify::new(),
            aborted: AtomicBool::new(false),
            requests: tokio::sync::watch::Sender::new(0),
        });
        if counts.arrivals.len() >= 2 * self.limits.max_total {
            counts.arrivals.retain(|c| match c.upgrade() {
                Some(c) => {
                    let keep = !c.used.load(Ordering::Acquire);
                    seen.push(c);
                    keep
                }
                None => false,
            });
        }
        counts.arrivals.push_back(Arc::downgrade(&connection));
        drop(counts);
        self.open.send_modify(|n| *n += 1);
        Ok(connection)
    }

    /// (anonymous, authenticated) connections open now.
    pub fn open(&self) -> (usize, usize) {
        let counts = self.counts.lock().expect("connections lock");
        (counts.anonymous, counts.authenticated)
    }

    /// Connections refused at a cap since the start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Unused connections closed for a newcomer since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Resolves once no connection is open.
    pub async fn drained(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    fn release(&self, peer: IpAddr, authenticated: bool, evicted: bool) {
        let mut counts = self.counts.lock().expect("connections lock");
        if authenticated {
            counts.authenticated -= 1;
        } else if !evicted {
            counts.anonymous -= 1;
            forget_one(&mut counts.per_address, peer);
        }
        drop(counts);
        self.open.send_modify(|n| *n -= 1);
    }

    /// Moves an anonymous connection to the authenticated ones (unless it was evicted).
    fn promote(&self, connection: &Connection) {
        let mut counts = self.counts.lock().expect("connections lock");
        if connection.evicted.load(Ordering::Acquire)
            || connection.authenticated.load(Ordering::Acquire)
        {
            return;
        }
        counts.anonymous -= 1;
        counts.authenticated += 1;
        forget_one(&mut counts.per_address, connection.peer);
        connection.authenticated.store(true, Ordering::Release);
    }
}

fn forget_one(per_address: &mut HashMap<IpAddr, usize>, peer: IpAddr) {
    if let Some(n) = per_address.get_mut(&peer) {
        *n -= 1;
        if *n == 0 {
            per_address.remove(&peer);
        }
    }
}

/// One open connection; dropping it frees its place. Requests carry it as an extension.
#[derive(Debug)]
pub struct Connection {
    registry: Arc<Connections>,
    peer: IpAddr,
    authenticated: AtomicBool,
    /// A request has started on it: it is no longer evicted for a newcomer.
    used: AtomicBool,
    /// Its place went to a newcomer; it is to be closed.
    evicted: AtomicBool,
    evict: tokio::sync::Notify,
    /// Close the connection now, whatever is open on it (a watcher that does not read).
    abort: tokio::sync::Notify,
    aborted: AtomicBool,
    /// Requests open on the connection (a watch stays open until its stream ends).
    requests: tokio::sync::watch::Sender<usize>,
}

impl Connection {
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// A request on this connection carried a valid token: it leaves the anonymous share.
    pub fn authenticated(&self) {
        if !self.authenticated.load(Ordering::Acquire) {
            self.registry.promote(self);
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    /// Counts a request as open until the guard (kept with its response body) is dropped.
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.used.store(true, Ordering::Release);
        self.requests.send_modify(|n| *n += 1);
        RequestGuard(self.clone())
    }

    /// Resolves when the connection's place went to a newcomer: close it.
    pub async fn evicted(&self) {
        if self.evicted.load(Ordering::Acquire) {
            return;
        }
        self.evict.notified().await;
    }

    /// Asks the server to close the connection at once.
    pub fn close_now(&self) {
        self.aborted.store(true, Ordering::Release);
        self.abort.notify_one();
    }

    /// Resolves when [`Connection::close_now`] was called.
    pub async fn closed_by_server(&self) {
        if self.aborted.load(Ordering::Acquire) {
            return;
        }
        self.abort.notified().await;
    }

    /// Resolves once the connection has had no open request for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        let mut rx = self.requests.subscribe();
        loop {
            if rx.wait_for(|n| *n == 0).await.is_err() {
                return;
            }
            rx.borrow_and_update();
            tokio::select! {
                () = tokio::time::sleep(idle) => {
                    if *rx.borrow() == 0 {
                        return;
                    }
                }
                changed = rx.changed() => if changed.is_err() {
                    return;
                },
            }
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.registry.release(
            self.peer,
            self.authenticated.load(Ordering::Acquire),
            self.evicted.load(Ordering::Acquire),
        );
    }
}

/// An open request of a [`Connection`].
#[derive(Debug)]
pub struct RequestGuard(Arc<Connection>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.requests.send_modify(|n| *n -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: usize, reserved: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_total: total,
            max_per_address: per_address,
            reserved,
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn one_address_is_capped_and_others_still_get_in() {
        let c = Connections::new(limits(10, 2, 1));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let held = [c.admit(a).unwrap(), c.admit(a).unwrap()];
        assert_eq!(c.admit(a).unwrap_err(), Refused::Address);
        let other = c.admit(b).unwrap();
        assert_eq!(c.open(), (3, 0));
        drop(held);
        assert!(c.admit(a).is_ok(), "a closed connection frees its place");
        drop(other);
        assert_eq!(c.refused(), 1);
    }

    #[test]
    fn the_reserved_share_is_for_authenticated_connections() {
        let c = Connections::new(limits(4, 10, 2));
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let agent = c.admit(ip(1)).unwrap();
        agent.authenticated();
        agent.authenticated();
        assert_eq!(c.open(), (0, 1));
        let anon = [c.admit(ip(2)).unwrap(), c.admit(ip(3)).unwrap()];
        let _busy: Vec<RequestGuard> = anon.iter().map(|a| a.request_started()).collect();
        assert_eq!(
            c.admit(ip(4)).unwrap_err(),
            Refused::Total,
            "anonymous connections in use stop at the total minus the reserve"
        );
        drop(agent);
        assert_eq!(c.open(), (2, 0));
    }

    #[tokio::test]
    async fn at_the_cap_a_newcomer_takes_the_place_of_the_oldest_unused_connection() {
        let c = Connections::new(limits(3, 10, 1));
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        let used = c.admit(ip(1)).unwrap();
        let _request = used.request_started();
        let idle = c.admit(ip(2)).unwrap();
        let newcomer = c.admit(ip(3)).unwrap();
        idle.evicted().await;
        assert_eq!(c.open(), (2, 0), "the evicted one no longer counts");
        drop(idle);
        assert_eq!(c.open(), (2, 0));
        let _r = newcomer.request_started();
        assert_eq!(
            c.admit(ip(4)).unwrap_err(),
            Refused::Total,
            "connections in use are never evicted"
        );
    }

    #[tokio::test]
    async fn a_connection_is_idle_only_without_open_requests() {
        let c = Connections::new(limits(4, 4, 1));
        let conn = c.admit(IpAddr::from([127, 0, 0, 1])).unwrap();
        let idle = Duration::from_millis(50);
        let request = conn.request_started();
        let busy = tokio::time::timeout(Duration::from_millis(300), conn.idle_for(idle));
        assert!(busy.await.is_err(), "an open request keeps it busy");
        drop(request);
        let start = std::time::Instant::now();
        conn.idle_for(idle).await;
        assert!(start.elapsed() >= idle);
        drop(conn);
        c.drained().await;
    }
}
