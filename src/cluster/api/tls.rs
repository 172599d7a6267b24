//! First-start bootstrap of a secure server, as k3s does it: a CA and a serving certificate
//! (rcgen), an admin token and an agent join token, and a kubeconfig that trusts the CA, all
//! in the data dir with owner-only permissions. Later starts reuse them.

use std::io::Write as _;
use std::net::IpAddr;
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
    /// The names the serving certificate was issued for, one a line.
    pub fn server_names(&self) -> PathBuf {
        self.0.join("tls/server.names")
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

/// The CA's parameters (the same on every start, so a CA rebuilt from its key signs
/// certificates that chain to the CA certificate on disk).
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
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

/// Whether `name` can go in a certificate: an IP address or a DNS name (`*.` allowed first).
pub fn valid_san(name: &str) -> bool {
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The addresses of this machine's interfaces (IPv6 link-local ones left out: they need a
/// zone to be reached).
pub fn interface_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for a in addrs {
        let Some(address) = a.address else { continue };
        let ip = if let Some(v4) = address.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = address.as_sockaddr_in6() {
            if v6.ip().segments()[0] & 0xffc0 == 0xfe80 {
                continue;
            }
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// The names the serving certificate carries: localhost, the loopback addresses, the host
/// name, the listen address — or every interface's address when listening on an
/// unspecified one — and each `--tls-san`.
pub fn serving_names(listen: IpAddr, extra: &[String]) -> Vec<String> {
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
    if listen.is_unspecified() {
        names.extend(interface_addresses().iter().map(IpAddr::to_string));
    } else {
        names.push(listen.to_string());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Creates the CA if it is missing, and (re-)issues the serving certificate, signed by it,
/// when it is missing or was issued for other names than `names`. The CA is never replaced,
/// so clients that trust it keep working. Returns whether a serving certificate was issued.
pub fn certificates(dir: &DataDir, names: &[String]) -> Result<bool, BootstrapError> {
    let (ca_cert, ca_key) = if dir.ca_cert().exists() && dir.ca_key().exists() {
        let key = KeyPair::from_pem(&read(&dir.ca_key())?)?;
        (ca_params()?.self_signed(&key)?, key)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        write(&dir.ca_key(), key.serialize_pem().as_bytes())?;
        write(&dir.ca_cert(), cert.pem().as_bytes())?;
        (cert, key)
    };
    let sorted = |list: &[String]| {
        let mut v: Vec<String> = list.to_vec();
        v.sort();
        v
    };
    let issued_for: Vec<String> = std::fs::read_to_string(dir.server_names())
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default();
    if dir.server_cert().exists()
        && dir.server_key().exists()
        && sorted(&issued_for) == sorted(names)
    {
        return Ok(false);
    }
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(names.to_vec())?;
    server
        .distinguished_name
        .push(DnType::CommonName, "berth-server");
    server.not_after = rcgen::date_time_ymd(2036, 1, 1);
    server.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;
    write(&dir.server_key(), server_key.serialize_pem().as_bytes())?;
    write(&dir.server_cert(), server_cert.pem().as_bytes())?;
    write(&dir.server_names(), names.join("\n").as_bytes())?;
    Ok(true)
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
    fn new_names_reissue_the_serving_certificate_under_the_same_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir(tmp.path().to_path_buf());
        let names = serving_names("127.0.0.1".parse().unwrap(), &[]);
        certificates(&dir, &names).unwrap();
        let ca = std::fs::read(dir.ca_cert()).unwrap();
        let first = std::fs::read(dir.server_cert()).unwrap();
        let more = serving_names(
            "127.0.0.1".parse().unwrap(),
            &["master.example".into(), "192.0.2.7".into()],
        );
        assert!(more.contains(&"master.example".to_string()));
        assert!(certificates(&dir, &more).unwrap(), "re-issued");
        assert_ne!(first, std::fs::read(dir.server_cert()).unwrap());
        assert_eq!(ca, std::fs::read(dir.ca_cert()).unwrap(), "the CA is kept");
        // The new certificate chains to the CA on disk: rustls accepts it for the new name.
        use rustls::client::danger::ServerCertVerifier;
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(dir.ca_cert()).unwrap())
            .unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let leaf = CertificateDer::from_pem_file(dir.server_cert()).unwrap();
        for name in ["master.example", "192.0.2.7", "localhost"] {
            verifier
                .verify_server_cert(
                    &leaf,
                    &[],
                    &ServerName::try_from(name).unwrap(),
                    &[],
                    UnixTime::now(),
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let everywhere = serving_names("0.0.0.0".parse().unwrap(), &[]);
        for ip in interface_addresses() {
            assert!(
                everywhere.contains(&ip.to_string()),
                "{ip} in {everywhere:?}"
            );
        }
        assert!(valid_san("*.example.com") && valid_san("::1"));
        assert!(!valid_san("bad name") && !valid_san("-x.example") && !valid_san(""));
    }

    #[test]
    fn bootstrap_creates_private_files_once_and_reuses_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir(tmp.path().to_path_buf());
        let t1 = tokens(&dir).unwrap();
        let names = serving_names("127.0.0.1".parse().unwrap(), &[]);
        assert!(certificates(&dir, &names).unwrap());
        let cert = std::fs::read(dir.server_cert()).unwrap();
        let t2 = tokens(&dir).unwrap();
        assert!(!certificates(&dir, &names).unwrap());
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
