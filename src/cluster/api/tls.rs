//! First-start bootstrap of a secure server, as k3s does it: a CA and a serving certificate
//! (rcgen), an admin token and an agent join token, and a kubeconfig that trusts the CA, all
//! in the data dir with owner-only permissions. Later starts reuse them.

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot generate certificates")]
    Certificate(#[from] rcgen::Error),
    #[error("{path} is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("the TLS configuration is invalid")]
    Tls(#[from] rustls::Error),
}

/// Writes a file readable only by its owner (keys, tokens, kubeconfigs).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn read(path: &Path) -> Result<String, BootstrapError> {
    std::fs::read_to_string(path).map_err(|source| BootstrapError::Read {
        path: path.into(),
        source,
    })
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BootstrapError> {
    write_private(path, bytes).map_err(|source| BootstrapError::Write {
        path: path.into(),
        source,
    })
}

/// The bearer tokens the server accepts.
#[derive(Clone)]
pub struct Tokens {
    pub admin: String,
    pub agent: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { .. }")
    }
}

fn random_token(prefix: &str) -> String {
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}.{hex}")
}

/// The paths of everything bootstrap keeps in the data dir.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn ca_cert(&self) -> PathBuf {
        self.0.join("tls/ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.0.join("tls/ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.0.join("tls/server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.0.join("tls/server.key")
    }
    pub fn admin_token(&self) -> PathBuf {
        self.0.join("tokens/admin")
    }
    pub fn agent_token(&self) -> PathBuf {
        self.0.join("tokens/agent-join")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.0.join("kubeconfig.yaml")
    }
    pub fn encryption_keys(&self) -> PathBuf {
        self.0.join("encryption-keys.json")
    }
}

/// Loads the tokens, creating them on first start.
pub fn tokens(dir: &DataDir) -> Result<Tokens, BootstrapError> {
    let load = |path: PathBuf, prefix: &str| -> Result<String, BootstrapError> {
        if path.exists() {
            let t = read(&path)?.trim().to_string();
            if t.len() < 16 {
                return Err(BootstrapError::Malformed {
                    path,
                    reason: "the token is too short".into(),
                });
            }
            Ok(t)
        } else {
            let t = random_token(prefix);
            write(&path, t.as_bytes())?;
            Ok(t)
        }
    };
    Ok(Tokens {
        admin: load(dir.admin_token(), "berth-admin")?,
        agent: load(dir.agent_token(), "berth-agent")?,
    })
}

/// The CA's certificate parameters: the same every time, so a CA rebuilt from its key (on a
/// master that joined with the key from etcd) issues certificates its original verifies.
fn ca_params() -> Result<CertificateParams, BootstrapError> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "berth-server-ca");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(ca)
}

/// Creates the CA and the serving certificate if they are missing. The serving certificate
/// names localhost, the loopback addresses, the host name and the listen address. A CA that
/// is there (written by a master that joined a cluster) signs a missing serving certificate.
pub fn certificates(dir: &DataDir, listen: SocketAddr) -> Result<(), BootstrapError> {
    if dir.server_cert().exists() && dir.server_key().exists() && dir.ca_cert().exists() {
        return Ok(());
    }
    let have_ca = dir.ca_cert().exists() && dir.ca_key().exists();
    let ca_key = if have_ca {
        let pem = read(&dir.ca_key())?;
        KeyPair::from_pem(&pem).map_err(|e| BootstrapError::Malformed {
            path: dir.ca_key(),
            reason: e.to_string(),
        })?
    } else {
        KeyPair::generate()?
    };
    let ca_cert = ca_params()?.self_signed(&ca_key)?;

    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    let ip = listen.ip();
    if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
        names.push(ip.to_string());
    }
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(names)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "berth-server");
    server.not_after = rcgen::date_time_ymd(2036, 1, 1);
    server.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;

    if !have_ca {
        write(&dir.ca_key(), ca_key.serialize_pem().as_bytes())?;
        write(&dir.ca_cert(), ca_cert.pem().as_bytes())?;
    }
    write(&dir.server_key(), server_key.serialize_pem().as_bytes())?;
    write(&dir.server_cert(), server_cert.pem().as_bytes())?;
    Ok(())
}

/// The rustls server configuration from the files in the data dir.
pub fn server_config(dir: &DataDir) -> Result<Arc<rustls::ServerConfig>, BootstrapError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let malformed = |path: PathBuf, e: rustls::pki_types::pem::Error| BootstrapError::Malformed {
        path,
        reason: e.to_string(),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.server_cert())
        .map_err(|e| malformed(dir.server_cert(), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| malformed(dir.server_cert(), e))?;
    let key = PrivateKeyDer::from_pem_file(dir.server_key())
        .map_err(|e| malformed(dir.server_key(), e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes `DIR/kubeconfig.yaml` for the admin, pointing at `server_url`.
pub fn write_kubeconfig(
    dir: &DataDir,
    server_url: &str,
    tokens: &Tokens,
    tls: bool,
) -> Result<PathBuf, BootstrapError> {
    let ca_line = if tls {
        let ca = read(&dir.ca_cert())?;
        format!("    certificate-authority-data: {}\n", B64.encode(ca))
    } else {
        String::new()
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server_url}\n{ca_line}users:\n- name: berth-admin\n  user:\n    token: {}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: berth-admin\n    namespace: default\ncurrent-context: berth\n",
        tokens.admin
    );
    let path = dir.kubeconfig();
    write(&path, text.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_creates_private_files_once_and_reuses_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir(tmp.path().to_path_buf());
        let t1 = tokens(&dir).unwrap();
        certificates(&dir, "127.0.0.1:0".parse().unwrap()).unwrap();
        let cert = std::fs::read(dir.server_cert()).unwrap();
        let t2 = tokens(&dir).unwrap();
        certificates(&dir, "127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(t1.admin, t2.admin);
        assert_ne!(t1.admin, t1.agent);
        assert_eq!(cert, std::fs::read(dir.server_cert()).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.admin_token())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "tokens are owner-only");
        server_config(&dir).unwrap();
        let kc = write_kubeconfig(&dir, "https://127.0.0.1:1", &t1, true).unwrap();
        let text = std::fs::read_to_string(kc).unwrap();
        assert!(text.contains("certificate-authority-data:") && text.contains(&t1.admin));
    }
}
