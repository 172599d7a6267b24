//! Fetching over ssh: the server an ssh URL names and the check of its host key against the
//! `known_hosts` of the source's Secret. A key that no line vouches for is refused; there is
//! no "accept any host" mode.

use super::known_hosts::{KnownHosts, Verdict, fingerprint, host_name, key_type};
use super::{Credentials, FetchError, local_path, redact_url};

/// The server an ssh URL points to: `ssh://[user@]host[:port]/path` or scp-like
/// `[user@]host:path`. (The user is libgit2's to read.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
}

impl SshTarget {
    /// The command that prints the `known_hosts` lines of this server.
    pub fn keyscan(&self) -> String {
        match self.port {
            22 => format!("ssh-keyscan {}", self.host),
            port => format!("ssh-keyscan -p {port} {}", self.host),
        }
    }
}

/// The ssh server a URL names, if it is an ssh URL.
pub fn ssh_target(url: &str) -> Option<SshTarget> {
    let (authority, scp_like) = match ["ssh://", "git+ssh://", "ssh+git://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
    {
        Some(rest) => (&rest[..rest.find('/').unwrap_or(rest.len())], false),
        None if url.contains("://") || local_path(url).is_some() => return None,
        None => {
            // scp-like: `host:path`, where no `/` comes before the colon.
            let colon = url.find(':')?;
            if url[..colon].contains('/') {
                return None;
            }
            (&url[..colon], true)
        }
    };
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, rest)| rest);
    let (host, port) = if scp_like {
        (host_port, None)
    } else if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() => p.parse().ok()?,
        _ => 22,
    };
    if host.is_empty() {
        return None;
    }
    Some(SshTarget {
        host: host.to_string(),
        port,
    })
}

/// The ssh server of a source and the host keys its Secret vouches for.
pub struct HostKeyCheck {
    target: SshTarget,
    known_hosts: KnownHosts,
}

impl HostKeyCheck {
    /// For an ssh URL: its server and the Secret's `known_hosts`, which it cannot go without.
    pub fn for_url(
        url: &str,
        credentials: Option<&Credentials>,
    ) -> Result<Option<Self>, FetchError> {
        let Some(target) = ssh_target(url) else {
            return Ok(None);
        };
        let known_hosts = credentials
            .and_then(|c| c.known_hosts.as_deref())
            .map(KnownHosts::parse)
            .filter(|k| !k.is_empty());
        match known_hosts {
            Some(known_hosts) => Ok(Some(HostKeyCheck {
                target,
                known_hosts,
            })),
            None => Err(FetchError::NoKnownHosts {
                url: redact_url(url),
                host: host_name(&target.host, target.port),
                keyscan: target.keyscan(),
            }),
        }
    }

    /// Why the server's `key` is not trusted, if it is not.
    pub fn refusal(&self, key: &[u8]) -> Option<String> {
        let host = host_name(&self.target.host, self.target.port);
        let kind = key_type(key).unwrap_or("unknown");
        let presented = format!("its {kind} key {}", fingerprint(key));
        let fix = format!(
            "if you trust it, put the output of `{}` in `known_hosts`",
            self.target.keyscan()
        );
        match self
            .known_hosts
            .check(&self.target.host, self.target.port, key)
        {
            Verdict::Trusted => None,
            Verdict::Mismatch => Some(format!(
                "host key mismatch for {host}: {presented} is not the {kind} key that \
                 known_hosts lists for it (the server's key changed, or another server \
                 answers); {fix}"
            )),
            Verdict::Revoked => Some(format!(
                "host key of {host} is revoked: {presented} is marked @revoked in known_hosts"
            )),
            Verdict::OtherTypes(types) => Some(format!(
                "host key not verified for {host}: known_hosts lists only {} keys for it and \
                 the server offered {presented}; {fix}",
                types.join(", ")
            )),
            Verdict::UnknownHost => Some(format!(
                "unknown host {host}: known_hosts has no entry for it ({presented}); {fix}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_name_their_server_and_port() {
        let target = |host: &str, port| {
            Some(SshTarget {
                host: host.into(),
                port,
            })
        };
        assert_eq!(
            ssh_target("ssh://root@127.0.0.1:2222/srv/repo.git"),
            target("127.0.0.1", 2222)
        );
        assert_eq!(
            ssh_target("ssh://git.example/repo.git"),
            target("git.example", 22)
        );
        assert_eq!(
            ssh_target("git@git.example:team/repo.git"),
            target("git.example", 22)
        );
        assert_eq!(
            ssh_target("ssh://git@[::1]:2200/repo.git"),
            target("::1", 2200)
        );
        for not_ssh in [
            "https://git.example/repo.git",
            "file:///srv/repo.git",
            "/srv/repo.git",
            "./dir:with-colon",
            "relative/dir:x",
        ] {
            assert_eq!(ssh_target(not_ssh), None, "{not_ssh}");
        }
        assert_eq!(ssh_target("ssh://git.example:notaport/r"), None);
    }

    #[test]
    fn an_ssh_source_without_known_hosts_is_refused_with_the_way_to_fix_it() {
        let creds = Credentials {
            ssh_key: Some("key".into()),
            ..Default::default()
        };
        let url = "ssh://git@127.0.0.1:2222/repo.git";
        for credentials in [None, Some(&creds)] {
            let error = HostKeyCheck::for_url(url, credentials).err().unwrap();
            let message = error.to_string();
            assert!(message.contains("no `known_hosts`"), "{message}");
            assert!(
                message.contains("ssh-keyscan -p 2222 127.0.0.1"),
                "{message}"
            );
        }
        assert!(matches!(
            HostKeyCheck::for_url("https://git.example/r.git", None),
            Ok(None)
        ));
    }

    #[test]
    fn a_refused_host_key_says_why_and_shows_its_fingerprint() {
        use base64::Engine;
        let listed = "AAAAC3NzaC1lZDI1NTE5AAAAIPVV/WzxRwsB29abjLT8m7d52InDwXcK+3mYYslJ4UMV";
        let creds = Credentials {
            known_hosts: Some(format!("[127.0.0.1]:2222 ssh-ed25519 {listed}")),
            ..Default::default()
        };
        let check = HostKeyCheck::for_url("ssh://git@127.0.0.1:2222/r.git", Some(&creds))
            .unwrap()
            .unwrap();
        let key = base64::engine::general_purpose::STANDARD
            .decode(listed)
            .unwrap();
        assert_eq!(check.refusal(&key), None);
        let mut other = key.clone();
        *other.last_mut().unwrap() ^= 1;
        let message = check.refusal(&other).unwrap();
        assert!(message.starts_with("host key mismatch for [127.0.0.1]:2222"));
        assert!(message.contains(&fingerprint(&other)), "{message}");
        let elsewhere = HostKeyCheck::for_url("git@127.0.0.1:r.git", Some(&creds))
            .unwrap()
            .unwrap();
        let message = elsewhere.refusal(&key).unwrap();
        assert!(message.starts_with("unknown host 127.0.0.1"), "{message}");
        assert!(message.contains("ssh-keyscan 127.0.0.1"), "{message}");
    }
}
