//! Connecting to a berth (or any Kubernetes) API server as a client: the kubeconfig lookup
//! kubectl uses (`--kubeconfig`, `KUBECONFIG`, `~/.kube/config`), with `--server`, `--token`
//! and `--certificate-authority` overrides. TLS and kubeconfig parsing are kube-rs's; this
//! module only decides which settings win.

pub mod applyset;
pub mod crds;
pub mod discovery;
pub mod failover;

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

/// Where to find the server and how to authenticate: the flags every client command shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientOptions {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config)
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The API server's URL, overriding the kubeconfig; several masters' URLs comma-separated
    /// (requests move to the next when one cannot be reached)
    #[arg(long, global = true, value_name = "URL[,URL…]")]
    pub server: Option<String>,
    /// Bearer token, overriding the kubeconfig
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "BERTH_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate, overriding the kubeconfig
    #[arg(long, global = true, value_name = "FILE")]
    pub certificate_authority: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read the kubeconfig {path}")]
    ReadKubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error(
        "no kubeconfig found (looked at --kubeconfig, $KUBECONFIG and ~/.kube/config); \
         pass --kubeconfig FILE, or --server URL with --token"
    )]
    NoConfig(#[source] KubeconfigError),
    #[error("the kubeconfig is not usable")]
    Kubeconfig(#[source] KubeconfigError),
    #[error("--server {url:?} is not a valid URL")]
    ServerUrl { url: String },
    #[error("cannot read the CA certificate {path}")]
    ReadCa {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot set up the connection to the API server")]
    Client(#[source] kube::Error),
}

/// A client plus the namespace commands default to (the context's, else `default`).
#[derive(Clone)]
pub struct Connection {
    pub client: kube::Client,
    pub default_namespace: String,
    /// The server URL, for messages such as `berth cluster-info`.
    pub server_url: String,
}

impl ClientOptions {
    /// Resolves the settings into a `kube::Config` without touching the network.
    pub async fn config(&self) -> Result<kube::Config, ClientError> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let mut config = if let Some(path) = &self.kubeconfig {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| ClientError::ReadKubeconfig {
                    path: path.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(ClientError::Kubeconfig)?
        } else if let Some(server) = &self.server {
            // --server alone is enough: no kubeconfig needs to exist.
            match kube::Config::from_kubeconfig(&options).await {
                Ok(config) => config,
                Err(_) => kube::Config::new(first_url(server)?),
            }
        } else {
            kube::Config::from_kubeconfig(&options)
                .await
                .map_err(ClientError::NoConfig)?
        };
        if let Some(server) = &self.server {
            config.cluster_url = first_url(server)?;
        }
        if let Some(token) = &self.token {
            config.auth_info = kube::config::AuthInfo {
                token: Some(token.clone().into()),
                ..kube::config::AuthInfo::default()
            };
        }
        if let Some(path) = &self.certificate_authority {
            config.root_cert = Some(read_ca(path)?);
            config.accept_invalid_certs = false;
        }
        Ok(config)
    }

    /// Builds the client. Nothing is sent until the first request. With several `--server`
    /// URLs, it moves between those masters (see [`failover`]).
    pub async fn connect(&self) -> Result<Connection, ClientError> {
        if self.server.as_deref().is_some_and(|s| s.contains(',')) {
            return Ok(self.connect_masters().await?.0);
        }
        let config = self.config().await?;
        let default_namespace = config.default_namespace.clone();
        let server_url = config.cluster_url.to_string();
        let client = kube::Client::try_from(config).map_err(ClientError::Client)?;
        Ok(Connection {
            client,
            default_namespace,
            server_url,
        })
    }

    /// A client that moves between masters: the `--server` URLs (or the kubeconfig's) and
    /// those [`failover::Masters::learn`] finds later. `berth agent` connects this way.
    pub async fn connect_masters(&self) -> Result<(Connection, failover::Masters), ClientError> {
        let config = self.config().await?;
        let urls = match &self.server {
            Some(server) => server
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(parse_url)
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![config.cluster_url.clone()],
        };
        let default_namespace = config.default_namespace.clone();
        let server_url = config.cluster_url.to_string();
        let masters = failover::Masters::new(config, urls)?;
        Ok((
            Connection {
                client: masters.client(),
                default_namespace,
                server_url,
            },
            masters,
        ))
    }
}

/// The first of comma-separated URLs.
fn first_url(urls: &str) -> Result<http::Uri, ClientError> {
    parse_url(urls.split(',').next().unwrap_or(urls).trim())
}

fn parse_url(url: &str) -> Result<http::Uri, ClientError> {
    url.parse::<http::Uri>()
        .ok()
        .filter(|u| u.scheme().is_some() && u.host().is_some())
        .ok_or_else(|| ClientError::ServerUrl { url: url.into() })
}

/// The DER certificates in a PEM file, as `kube::Config::root_cert` wants them.
fn read_ca(path: &std::path::Path) -> Result<Vec<Vec<u8>>, ClientError> {
    let pem = std::fs::read(path).map_err(|source| ClientError::ReadCa {
        path: path.into(),
        source,
    })?;
    let certs: Vec<Vec<u8>> = rustls_pemfile_certs(&pem);
    if certs.is_empty() {
        return Err(ClientError::NoCertificate { path: path.into() });
    }
    Ok(certs)
}

/// Decodes every `CERTIFICATE` block of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|c| c.to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_and_token_flags_need_no_kubeconfig() {
        let options = ClientOptions {
            server: Some("https://127.0.0.1:6443".into()),
            token: Some("berth-admin-x".into()),
            ..ClientOptions::default()
        };
        let config = options.config().await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert!(config.auth_info.token.is_some());
    }

    #[tokio::test]
    async fn a_bad_server_url_is_a_clear_error() {
        let options = ClientOptions {
            server: Some("not a url".into()),
            ..ClientOptions::default()
        };
        let err = options.config().await.unwrap_err();
        assert!(err.to_string().contains("not a valid URL"), "{err}");
    }

    #[tokio::test]
    async fn the_kubeconfig_file_names_the_server_and_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:7443\n\
             users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n    namespace: shop\n\
             current-context: x\n",
        )
        .unwrap();
        let options = ClientOptions {
            kubeconfig: Some(path),
            ..ClientOptions::default()
        };
        let config = options.config().await.unwrap();
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:7443/");
        assert_eq!(config.default_namespace, "shop");
    }
}
