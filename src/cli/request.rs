//! What the client commands share: one Tokio runtime per command, the connection from the
//! client flags, plain JSON requests (objects, lists, Tables, deletes) and errors worded as
//! kubectl words them (`Error from server (NotFound): pods "x" not found`).

use http::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;

use crate::client::discovery::UnknownResource;
use crate::client::{ClientError, ClientOptions, Connection};

/// What `Accept` asks for a server-side Table, as kubectl does.
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// The exit code for anything the server refused or the client could not do, as kubectl.
pub const EXIT_FAILED: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Finding or reading the kubeconfig, or building the client.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The server answered with a `Status` failure.
    #[error("Error from server{}: {}", reason(.0), .0.message)]
    Server(Box<kube::core::Status>),
    /// The request never got an answer.
    #[error("cannot reach the API server at {url}: {}", root_cause(.source))]
    Unreachable {
        url: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    UnknownResource(#[from] UnknownResource),
    /// Bad arguments, with what to do instead.
    #[error("{0}")]
    Usage(String),
    /// The request went through but the outcome is not what was asked (a wait timed out).
    #[error("{0}")]
    Failed(String),
}

fn reason(status: &kube::core::Status) -> String {
    if status.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", status.reason)
    }
}

fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl CliError {
    /// Whether the server said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CliError::Server(s) if s.code == 404)
    }

    /// Prints the error on stderr as kubectl does and returns the exit code.
    pub fn report(&self) -> u8 {
        match self {
            CliError::Server(_) => eprintln!("{self}"),
            CliError::Client(e) => {
                eprintln!("error: {e}");
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    eprintln!("  caused by: {cause}");
                    source = cause.source();
                }
            }
            _ => eprintln!("error: {self}"),
        }
        match self {
            CliError::Client(_) | CliError::Usage(_) => super::EXIT_ERROR,
            _ => EXIT_FAILED,
        }
    }
}

/// Runs one client command on a small runtime and turns its error into an exit code.
pub fn run<F>(command: F) -> u8
where
    F: std::future::Future<Output = Result<u8, CliError>>,
{
    let Some(runtime) = super::single_thread_runtime() else {
        return super::EXIT_ERROR;
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => e.report(),
    }
}

/// A connected client plus what the commands keep asking for.
pub struct Session {
    pub conn: Connection,
}

impl Session {
    pub async fn connect(options: &ClientOptions) -> Result<Session, CliError> {
        Ok(Session {
            conn: options.connect().await?,
        })
    }

    /// Maps a `kube` error to what the user reads.
    pub fn error(&self, error: kube::Error) -> CliError {
        match error {
            kube::Error::Api(status) => CliError::Server(status),
            source => CliError::Unreachable {
                url: self.conn.server_url.clone(),
                source,
            },
        }
    }

    /// What the server serves, from its discovery documents.
    pub async fn discover(&self) -> Result<crate::client::discovery::ServedResources, CliError> {
        crate::client::discovery::discover(&self.conn.client)
            .await
            .map_err(|e| self.error(e))
    }

    /// GETs a path (with its query) as JSON, or as a Table when `table` is set.
    pub async fn get(&self, path: &str, table: bool) -> Result<Value, CliError> {
        let request = http::Request::get(path)
            .header(
                ACCEPT,
                if table {
                    TABLE_ACCEPT
                } else {
                    "application/json"
                },
            )
            .body(Vec::new())
            .map_err(|e| CliError::Usage(format!("bad request path {path:?}: {e}")))?;
        self.conn
            .client
            .request::<Value>(request)
            .await
            .map_err(|e| self.error(e))
    }

    /// GETs a path as text (`/readyz`).
    pub async fn get_text(&self, path: &str) -> Result<String, CliError> {
        let request = http::Request::get(path)
            .body(Vec::new())
            .map_err(|e| CliError::Usage(format!("bad request path {path:?}: {e}")))?;
        self.conn
            .client
            .request_text(request)
            .await
            .map_err(|e| self.error(e))
    }

    /// DELETEs one object with `DeleteOptions`.
    pub async fn delete(&self, path: &str, options: &Value) -> Result<Value, CliError> {
        let request = http::Request::delete(path)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(serde_json::to_vec(options).unwrap_or_default())
            .map_err(|e| CliError::Usage(format!("bad request path {path:?}: {e}")))?;
        self.conn
            .client
            .request::<Value>(request)
            .await
            .map_err(|e| self.error(e))
    }

    /// Starts a watch of a collection path from `resource_version`; each item is one event.
    pub async fn watch(
        &self,
        path: &str,
        table: bool,
    ) -> Result<
        impl futures::Stream<Item = Result<kube::core::WatchEvent<Value>, kube::Error>> + use<>,
        CliError,
    > {
        let request = http::Request::get(path)
            .header(
                ACCEPT,
                if table {
                    TABLE_ACCEPT
                } else {
                    "application/json"
                },
            )
            .body(Vec::new())
            .map_err(|e| CliError::Usage(format!("bad request path {path:?}: {e}")))?;
        self.conn
            .client
            .request_events::<Value>(request)
            .await
            .map_err(|e| self.error(e))
    }
}

/// A collection or object path with its query string (`labelSelector`, `fieldSelector`…).
pub fn with_query(path: &str, query: &[(&str, &str)]) -> String {
    let query: Vec<(&str, &str)> = query
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if query.is_empty() {
        return path.to_string();
    }
    let encoded = serde_urlencoded::to_string(&query).unwrap_or_default();
    format!("{path}?{encoded}")
}

/// The namespace a command works in: `-n`, else the kubeconfig context's.
pub fn namespace_or_default(flag: &Option<String>, conn: &Connection) -> String {
    flag.clone()
        .unwrap_or_else(|| conn.default_namespace.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_read_as_kubectl_prints_them() {
        let status = kube::core::Status {
            code: 404,
            reason: "NotFound".into(),
            message: "pods \"x\" not found".into(),
            ..kube::core::Status::default()
        };
        let err = CliError::Server(Box::new(status));
        assert_eq!(
            err.to_string(),
            "Error from server (NotFound): pods \"x\" not found"
        );
        assert!(err.is_not_found());
    }

    #[test]
    fn empty_query_values_are_left_out() {
        assert_eq!(
            with_query(
                "/api/v1/pods",
                &[("labelSelector", "app=web"), ("fieldSelector", "")]
            ),
            "/api/v1/pods?labelSelector=app%3Dweb"
        );
        assert_eq!(with_query("/api/v1/pods", &[]), "/api/v1/pods");
    }
}
