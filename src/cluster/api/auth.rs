//! Authentication (bearer tokens) and authorization (admin: everything; agent: what a node
//! agent needs). Tokens are compared in constant time and never logged.

use axum::http::HeaderMap;

use super::resources::{Resource, Subresource};
use super::status::ApiError;
use super::tls::Tokens;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identity {
    Admin,
    Agent,
}

impl Identity {
    pub fn user(self) -> &'static str {
        match self {
            Identity::Admin => "system:berth:admin",
            Identity::Agent => "system:berth:agent",
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses anyone but the admin (endpoints that carry Secret values, or the whole server's
/// metrics): `Forbidden`, naming `verb` on `resource`.
pub fn admin_only(
    caller: Option<&Identity>,
    verb: &str,
    resource: &str,
    group: &str,
    namespace: Option<String>,
) -> Result<(), ApiError> {
    if caller == Some(&Identity::Admin) {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        user: Identity::Agent.user().into(),
        verb: verb.into(),
        resource: resource.into(),
        group: group.into(),
        namespace,
    })
}

/// The caller's identity from `Authorization: Bearer <token>`.
pub fn authenticate(tokens: &Tokens, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthorized)?;
    if constant_time_eq(token.as_bytes(), tokens.admin.as_bytes()) {
        Ok(Identity::Admin)
    } else if constant_time_eq(token.as_bytes(), tokens.agent.as_bytes()) {
        Ok(Identity::Agent)
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Resources an agent reads to run its pods.
const AGENT_READS: &[&str] = &[
    "nodes",
    "pods",
    "services",
    "endpoints",
    "configmaps",
    "secrets",
    "namespaces",
    "leases",
    "events",
];

/// Whether `identity` may do `verb` on the resource (and subresource).
pub fn authorize(
    identity: Identity,
    verb: &str,
    r: &Resource,
    sub: Option<Subresource>,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    let allowed = match identity {
        Identity::Admin => true,
        Identity::Agent => match verb {
            "get" | "list" | "watch" => AGENT_READS.contains(&r.plural),
            _ => match (r.plural, sub) {
                ("nodes", None | Some(Subresource::Status)) => true,
                ("leases" | "events", None) => true,
                ("pods", Some(Subresource::Status)) => verb != "delete" && verb != "create",
                // The agent removes a terminating pod once its containers are gone.
                ("pods", None) => verb == "delete",
                _ => false,
            },
        },
    };
    if allowed {
        Ok(())
    } else {
        let resource = match sub {
            Some(s) => format!("{}/{}", r.plural, s.name()),
            None => r.plural.to_string(),
        };
        Err(ApiError::Forbidden {
            user: identity.user().into(),
            verb: verb.into(),
            resource,
            group: r.group.into(),
            namespace: namespace.map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::api::resources::by_plural;

    #[test]
    fn agents_write_only_node_lease_event_pod_status_and_pod_deletes() {
        let pods = by_plural("", "v1", "pods").unwrap();
        let nodes = by_plural("", "v1", "nodes").unwrap();
        let deploys = by_plural("apps", "v1", "deployments").unwrap();
        let a = Identity::Agent;
        assert!(authorize(a, "list", pods, None, None).is_ok());
        assert!(authorize(a, "patch", pods, Some(Subresource::Status), Some("d")).is_ok());
        assert!(authorize(a, "create", nodes, None, None).is_ok());
        assert!(authorize(a, "delete", pods, None, Some("default")).is_ok());
        let e = authorize(a, "update", pods, None, Some("default")).unwrap_err();
        assert_eq!(e.code(), 403);
        assert!(e.to_string().contains("cannot update resource \"pods\""));
        assert!(authorize(a, "get", deploys, None, None).is_err());
        // Evicting spends a budget: the agent deletes only pods already terminating.
        let e = authorize(a, "create", pods, Some(Subresource::Eviction), Some("d")).unwrap_err();
        assert!(e.to_string().contains("pods/eviction"), "{e}");
        assert!(authorize(Identity::Admin, "delete", deploys, None, None).is_ok());
    }

    #[test]
    fn only_the_exact_tokens_authenticate() {
        let tokens = Tokens {
            admin: "berth-admin.abc123456789".into(),
            agent: "berth-agent.def123456789".into(),
        };
        let mut h = HeaderMap::new();
        assert!(authenticate(&tokens, &h).is_err());
        h.insert(
            "authorization",
            "Bearer berth-admin.abc12345678".parse().unwrap(),
        );
        assert!(authenticate(&tokens, &h).is_err());
        h.insert(
            "authorization",
            "Bearer berth-agent.def123456789".parse().unwrap(),
        );
        assert_eq!(authenticate(&tokens, &h).unwrap(), Identity::Agent);
    }
}
