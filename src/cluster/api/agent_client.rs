//! The API server's connection to an agent's log and exec endpoint: TLS that trusts exactly
//! one certificate, the one whose SHA-256 fingerprint the agent's Node publishes (no CA, no
//! name check: the pin is the trust), then HTTP/1.1 with the agent token.

use std::sync::Arc;
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use crate::cluster::agent_endpoint::AgentEndpoint;

/// How long connecting and the TLS handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the agent could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum AgentConnectError {
    /// The published URL is not `https://host:port`.
    #[error("the agent endpoint {url:?} is not an https://host:port URL")]
    BadUrl { url: String },
    /// TCP connect failed or timed out.
    #[error("cannot connect to the agent at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// TLS failed; with a fingerprint mismatch, the message says so.
    #[error("TLS with the agent at {url} failed: {reason}")]
    Tls { url: String, reason: String },
    /// HTTP on the TLS connection failed.
    #[error("HTTP to the agent at {url} failed: {reason}")]
    Http { url: String, reason: String },
}

/// Accepts exactly the certificate with the pinned SHA-256, and checks the handshake
/// signatures with it as rustls would.
#[derive(Debug)]
struct PinnedCertificate {
    sha256: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.sha256.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the agent's certificate does not match the fingerprint its Node publishes \
                 (annotation berth.dev/agent-cert-sha256)"
                    .into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The `host:port` of an `https://` endpoint URL, and the host alone.
fn authority(url: &str) -> Option<(String, String)> {
    let uri: http::Uri = url.parse().ok()?;
    if uri.scheme_str() != Some("https") {
        return None;
    }
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    uri.port_u16()?;
    Some((host.to_string(), uri.authority()?.to_string()))
}

/// An open HTTP/1.1 connection to an agent, ready for one request.
pub struct AgentConnection {
    pub sender: SendRequest<axum::body::Body>,
    /// `host:port`, for the request's `Host` header.
    pub authority: String,
}

/// Connects to `endpoint`, pinning its certificate. The connection task runs until the
/// request (and any upgrade) is done.
pub async fn connect(endpoint: &AgentEndpoint) -> Result<AgentConnection, AgentConnectError> {
    let url = endpoint.url.clone();
    let (host, authority) =
        authority(&url).ok_or_else(|| AgentConnectError::BadUrl { url: url.clone() })?;
    let sha256 = hex::decode(endpoint.cert_sha256.trim()).unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedCertificate {
        sha256,
        algorithms: provider.signature_verification_algorithms,
    };
    let tls = |reason: String| AgentConnectError::Tls {
        url: url.clone(),
        reason,
    };
    let mut config =
        rustls::ClientConfig::builder_with_provider(provider.clone() as Arc<CryptoProvider>)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name =
        ServerName::try_from(host.clone()).map_err(|e| tls(format!("bad host {host:?}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connecting = async {
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|e| AgentConnectError::Connect {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| tls(e.to_string()))
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| AgentConnectError::Connect {
            url: url.clone(),
            reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        })??;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| AgentConnectError::Http {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "agent connection ended with an error");
        }
    });
    Ok(AgentConnection { sender, authority })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_with_a_port_are_endpoints() {
        assert_eq!(
            authority("https://10.0.0.5:10250"),
            Some(("10.0.0.5".into(), "10.0.0.5:10250".into()))
        );
        assert_eq!(
            authority("https://[::1]:10250").map(|a| a.0),
            Some("::1".into())
        );
        assert!(authority("http://10.0.0.5:10250").is_none());
        assert!(authority("https://10.0.0.5").is_none());
    }
}
