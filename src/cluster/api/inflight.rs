//! Limits on concurrent requests, after Kubernetes' `--max-requests-inflight` (read-only) and
//! `--max-mutating-requests-inflight`: a request over its limit gets `429 TooManyRequests`
//! with `Retry-After` instead of a place in an unbounded queue. A quarter of each limit is
//! reserved for the node agents and the in-process controllers, so a flood of requests from
//! anyone else never delays a Lease renewal. Watches, logs and exec are long-running and not
//! counted (Kubernetes exempts them too); the cheap health paths are never limited.
//!
//! Refusals here and at the connection caps mark the server [`Overload`]ed, which the node
//! lifecycle reads: Leases that lapse while the master itself was overloaded are not the
//! nodes' fault.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::status::ApiError;

/// `--max-requests-inflight` and `--max-mutating-requests-inflight`.
#[derive(Debug, Clone, Copy)]
pub struct InflightLimits {
    pub read_only: usize,
    pub mutating: usize,
}

impl Default for InflightLimits {
    fn default() -> InflightLimits {
        InflightLimits {
            read_only: 400,
            mutating: 200,
        }
    }
}

/// What kind of request, for its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    ReadOnly,
    Mutating,
    /// Watches, logs, exec and health checks: not limited here.
    Exempt,
}

impl Class {
    /// The class of a request by method and path (with its query).
    pub fn of(method: &axum::http::Method, path: &str, query: Option<&str>) -> Class {
        use axum::http::Method;
        if matches!(path, "/healthz" | "/livez" | "/readyz" | "/version") {
            return Class::Exempt;
        }
        let watch = query.is_some_and(|q| {
            q.split('&')
                .any(|kv| matches!(kv, "watch=1" | "watch=true" | "watch=True"))
        });
        let long_running = path.ends_with("/log")
            || path.ends_with("/exec")
            || path.ends_with("/attach")
            || path.ends_with("/portforward");
        if watch || long_running {
            return Class::Exempt;
        }
        if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
            Class::ReadOnly
        } else {
            Class::Mutating
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::ReadOnly => "read-only",
            Class::Mutating => "mutating",
            Class::Exempt => "exempt",
        }
    }
}

struct Pool {
    limit: usize,
    shared: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
}

impl Pool {
    /// Places taken now, from both shares (together they hold `limit` places).
    fn taken(&self) -> usize {
        self.limit - self.shared.available_permits() - self.reserved.available_permits()
    }

    fn new(limit: usize) -> Pool {
        let limit = limit.max(2);
        let reserved = (limit / 4).max(1);
        Pool {
            limit,
            shared: Arc::new(Semaphore::new(limit - reserved)),
            reserved: Arc::new(Semaphore::new(reserved)),
        }
    }
}

/// The request limits of one server.
pub struct Inflight {
    read_only: Pool,
    mutating: Pool,
    rejected: AtomicU64,
    pub overload: Overload,
}

/// A place among the open requests, given back on drop.
pub type Permit = Option<OwnedSemaphorePermit>;

impl Inflight {
    pub fn new(limits: InflightLimits) -> Inflight {
        Inflight {
            read_only: Pool::new(limits.read_only),
            mutating: Pool::new(limits.mutating),
            rejected: AtomicU64::new(0),
            overload: Overload::default(),
        }
    }

    /// A place for a request of `class`; `reserved` callers (agents, controllers) may also
    /// take the reserved share.
    pub fn admit(&self, class: Class, reserved: bool) -> Result<Permit, ApiError> {
        let pool = match class {
            Class::Exempt => return Ok(None),
            Class::ReadOnly => &self.read_only,
            Class::Mutating => &self.mutating,
        };
        let permit = pool.shared.clone().try_acquire_owned().or_else(|e| {
            if reserved {
                pool.reserved.clone().try_acquire_owned()
            } else {
                Err(e)
            }
        });
        match permit {
            Ok(p) => Ok(Some(p)),
            Err(_) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                self.overload.mark();
                Err(ApiError::TooManyRequests {
                    kind: class.name(),
                    limit: pool.limit,
                    retry_after: 1,
                })
            }
        }
    }

    /// Requests holding a place now: (read-only, mutating).
    pub fn current(&self) -> (usize, usize) {
        (self.read_only.taken(), self.mutating.taken())
    }

    /// Requests refused with 429 since the start.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// When the server last refused work for lack of room (a 429, a connection at a cap).
#[derive(Debug, Default)]
pub struct Overload {
    last: Mutex<Option<Instant>>,
}

impl Overload {
    pub fn mark(&self) {
        *self.last.lock().expect("overload lock") = Some(Instant::now());
    }

    /// Whether the server refused work within the last `window`.
    pub fn within(&self, window: Duration) -> bool {
        self.last
            .lock()
            .expect("overload lock")
            .is_some_and(|t| t.elapsed() <= window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn watches_logs_and_health_are_not_limited() {
        assert_eq!(
            Class::of(&Method::GET, "/api/v1/pods", Some("watch=1")),
            Class::Exempt
        );
        assert_eq!(
            Class::of(&Method::GET, "/api/v1/namespaces/a/pods/b/log", None),
            Class::Exempt
        );
        assert_eq!(Class::of(&Method::GET, "/readyz", None), Class::Exempt);
        assert_eq!(
            Class::of(&Method::GET, "/api/v1/pods", Some("limit=5")),
            Class::ReadOnly
        );
        assert_eq!(
            Class::of(&Method::PATCH, "/api/v1/nodes/a", None),
            Class::Mutating
        );
    }

    #[test]
    fn a_full_pool_answers_429_but_keeps_the_reserve_for_agents() {
        let inflight = Inflight::new(InflightLimits {
            read_only: 8,
            mutating: 4,
        });
        let held: Vec<Permit> = (0..3)
            .map(|_| inflight.admit(Class::Mutating, false).unwrap())
            .collect();
        let refused = inflight.admit(Class::Mutating, false).unwrap_err();
        assert_eq!(refused.code(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.to_string().contains("4 concurrent mutating"));
        assert!(inflight.overload.within(Duration::from_secs(5)));
        let agent = inflight.admit(Class::Mutating, true).unwrap();
        assert!(agent.is_some(), "the reserved share is the agent's");
        assert!(inflight.admit(Class::Mutating, true).is_err());
        assert!(inflight.admit(Class::ReadOnly, false).is_ok());
        drop(held);
        assert!(inflight.admit(Class::Mutating, false).is_ok());
        assert_eq!(inflight.rejected(), 2);
    }
}
