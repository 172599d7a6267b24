//! OpenSSH `known_hosts` as a GitSource's Secret carries it: which host keys an ssh fetch
//! trusts, so git sync talks only to the server the user vouched for and never accepts any key.
//!
//! Understood as OpenSSH writes and reads it: `host[,host2] keytype base64key [comment]`,
//! `[host]:port` for a port other than 22, wildcard and negated (`!host`) patterns, hashed
//! host names (`|1|salt|hash`, HMAC-SHA1 of the name), and the `@revoked` marker.
//! `@cert-authority` lines are skipped: berth does not verify ssh host certificates.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The trusted (and revoked) host keys of one `known_hosts` text.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    revoked: bool,
    hosts: Hosts,
    /// The key in the SSH wire format: what the base64 field decodes to.
    key: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Hosts {
    /// `|1|salt|hash`: the name is only known to one who can compute the same HMAC.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// Comma-separated patterns, as written.
    Patterns(Vec<String>),
}

/// What `known_hosts` says of the key a server presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An entry for the host lists this very key.
    Trusted,
    /// The key is marked `@revoked` for the host.
    Revoked,
    /// The host is listed with a key of the same type, but another one: the server's key
    /// changed, or someone sits between.
    Mismatch,
    /// The host is listed only with keys of other types (named here).
    OtherTypes(Vec<String>),
    /// No entry names the host.
    UnknownHost,
}

impl KnownHosts {
    /// Reads every usable line; comments, blank lines and lines OpenSSH would not use either
    /// (a key that does not decode, or whose type is not the one written) are skipped.
    pub fn parse(text: &str) -> KnownHosts {
        KnownHosts {
            entries: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// True when no line could be used: such a file trusts no host.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `key` (SSH wire format) is the key of `host` on `port`.
    pub fn check(&self, host: &str, port: u16, key: &[u8]) -> Verdict {
        let name = host_name(host, port);
        let for_host: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.hosts.matches(&name))
            .collect();
        if for_host.iter().any(|e| e.revoked && e.key == key) {
            return Verdict::Revoked;
        }
        let listed: Vec<&Entry> = for_host.into_iter().filter(|e| !e.revoked).collect();
        if listed.iter().any(|e| e.key == key) {
            return Verdict::Trusted;
        }
        let presented = key_type(key);
        if listed.iter().any(|e| key_type(&e.key) == presented) {
            return Verdict::Mismatch;
        }
        let mut types: Vec<String> = listed
            .iter()
            .filter_map(|e| key_type(&e.key).map(str::to_string))
            .collect();
        types.dedup();
        if types.is_empty() {
            Verdict::UnknownHost
        } else {
            Verdict::OtherTypes(types)
        }
    }
}

/// The name a host is listed under: `host` on port 22, `[host]:port` on any other.
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    }
}

/// The key type a wire-format key names first (`ssh-ed25519`, `ssh-rsa`, …).
pub fn key_type(key: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(key.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(key.get(4..4 + len)?).ok()
}

/// The fingerprint OpenSSH shows for a key: `SHA256:` and the unpadded base64 digest.
pub fn fingerprint(key: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(key)))
}

fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let mut revoked = false;
    if let Some(marker) = first.strip_prefix('@') {
        match marker {
            "revoked" => revoked = true,
            _ => return None,
        }
        first = fields.next()?;
    }
    let written_type = fields.next()?;
    let key = STANDARD.decode(fields.next()?).ok()?;
    if key_type(&key) != Some(written_type) {
        return None;
    }
    let hosts = match first.strip_prefix("|1|") {
        Some(hashed) => {
            let (salt, hash) = hashed.split_once('|')?;
            Hosts::Hashed {
                salt: STANDARD.decode(salt).ok()?,
                hash: STANDARD.decode(hash).ok()?,
            }
        }
        None => Hosts::Patterns(first.split(',').map(str::to_ascii_lowercase).collect()),
    };
    Some(Entry {
        revoked,
        hosts,
        key,
    })
}

impl Hosts {
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                    return false;
                };
                mac.update(name.as_bytes());
                mac.verify_slice(hash).is_ok()
            }
            // As OpenSSH: a matching negated pattern excludes the host whatever else matches.
            Hosts::Patterns(patterns) => {
                let mut matched = false;
                for pattern in patterns {
                    match pattern.strip_prefix('!') {
                        Some(negated) if wildcard(negated.as_bytes(), name.as_bytes()) => {
                            return false;
                        }
                        Some(_) => {}
                        None => matched |= wildcard(pattern.as_bytes(), name.as_bytes()),
                    }
                }
                matched
            }
        }
    }
}

/// `*` (any run) and `?` (any one character) patterns, as OpenSSH's `match_pattern`.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| wildcard(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && wildcard(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && wildcard(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wire-format key of `kind` whose body is `body` (real enough for matching).
    fn key(kind: &str, body: &[u8]) -> Vec<u8> {
        let mut k = (kind.len() as u32).to_be_bytes().to_vec();
        k.extend_from_slice(kind.as_bytes());
        k.extend_from_slice(&(body.len() as u32).to_be_bytes());
        k.extend_from_slice(body);
        k
    }

    fn line(hosts: &str, k: &[u8]) -> String {
        format!(
            "{hosts} {} {} a comment",
            key_type(k).unwrap(),
            STANDARD.encode(k)
        )
    }

    /// The hashed form of `name` that `ssh-keygen -H` writes, with a fixed salt.
    fn hashed(name: &str) -> String {
        let salt = b"twenty-bytes-of-salt";
        let mut mac = Hmac::<Sha1>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        let hash = mac.finalize().into_bytes();
        format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(hash))
    }

    #[test]
    fn a_plain_entry_trusts_its_key_for_each_host_it_names() {
        let ed = key("ssh-ed25519", b"server key");
        let known = KnownHosts::parse(&format!(
            "# from ssh-keyscan\n\n{}\n",
            line("git.example,10.0.0.7", &ed)
        ));
        assert_eq!(known.check("git.example", 22, &ed), Verdict::Trusted);
        assert_eq!(known.check("GIT.example", 22, &ed), Verdict::Trusted);
        assert_eq!(known.check("10.0.0.7", 22, &ed), Verdict::Trusted);
    }

    #[test]
    fn another_port_is_listed_in_brackets_and_only_there() {
        let ed = key("ssh-ed25519", b"server key");
        let known = KnownHosts::parse(&line("[127.0.0.1]:2222", &ed));
        assert_eq!(known.check("127.0.0.1", 2222, &ed), Verdict::Trusted);
        assert_eq!(known.check("127.0.0.1", 22, &ed), Verdict::UnknownHost);
        assert_eq!(known.check("127.0.0.1", 2223, &ed), Verdict::UnknownHost);
        let on_22 = KnownHosts::parse(&line("127.0.0.1", &ed));
        assert_eq!(on_22.check("127.0.0.1", 2222, &ed), Verdict::UnknownHost);
    }

    #[test]
    fn hashed_names_match_the_host_they_hash_and_no_other() {
        let ed = key("ssh-ed25519", b"server key");
        let known = KnownHosts::parse(&format!(
            "{}\n{}",
            line(&hashed("git.example"), &ed),
            line(&hashed("[127.0.0.1]:2222"), &ed)
        ));
        assert_eq!(known.check("git.example", 22, &ed), Verdict::Trusted);
        assert_eq!(known.check("127.0.0.1", 2222, &ed), Verdict::Trusted);
        assert_eq!(known.check("other.example", 22, &ed), Verdict::UnknownHost);
        assert_eq!(known.check("127.0.0.1", 22, &ed), Verdict::UnknownHost);
    }

    #[test]
    fn lines_hashed_by_ssh_keygen_match() {
        // `ssh-keygen -H` of `git.example …` and `[127.0.0.1]:2222 …` with this key.
        let known = KnownHosts::parse(
            "|1|N8y9pKYqm/q4tg2KN5SfUHaGzOQ=|gU48ozK+0w3UeMFiuwNURUd7AaI= ssh-ed25519 \
             AAAAC3NzaC1lZDI1NTE5AAAAIPVV/WzxRwsB29abjLT8m7d52InDwXcK+3mYYslJ4UMV
             |1|Z123gNd94KooobGU2tbuBCs0Apw=|tQPVzpvF3rNxudFRxlqwFHvWi58= ssh-ed25519 \
             AAAAC3NzaC1lZDI1NTE5AAAAIPVV/WzxRwsB29abjLT8m7d52InDwXcK+3mYYslJ4UMV",
        );
        let key = STANDARD
            .decode("AAAAC3NzaC1lZDI1NTE5AAAAIPVV/WzxRwsB29abjLT8m7d52InDwXcK+3mYYslJ4UMV")
            .unwrap();
        assert_eq!(known.check("git.example", 22, &key), Verdict::Trusted);
        assert_eq!(known.check("127.0.0.1", 2222, &key), Verdict::Trusted);
        assert_eq!(known.check("127.0.0.1", 22, &key), Verdict::UnknownHost);
    }

    #[test]
    fn a_different_key_of_the_same_type_is_a_mismatch() {
        let listed = key("ssh-ed25519", b"the key the user vouched for");
        let presented = key("ssh-ed25519", b"some other server");
        let known = KnownHosts::parse(&line("git.example", &listed));
        assert_eq!(
            known.check("git.example", 22, &presented),
            Verdict::Mismatch
        );
        let hashed_known = KnownHosts::parse(&line(&hashed("git.example"), &listed));
        assert_eq!(
            hashed_known.check("git.example", 22, &presented),
            Verdict::Mismatch
        );
    }

    #[test]
    fn a_host_listed_only_with_other_key_types_is_not_trusted() {
        let rsa = key("ssh-rsa", b"rsa key");
        let ed = key("ssh-ed25519", b"server key");
        let known = KnownHosts::parse(&line("git.example", &rsa));
        assert_eq!(
            known.check("git.example", 22, &ed),
            Verdict::OtherTypes(vec!["ssh-rsa".into()])
        );
    }

    #[test]
    fn the_key_of_another_host_does_not_vouch_for_this_one() {
        let ed = key("ssh-ed25519", b"server key");
        let known = KnownHosts::parse(&line("git.example", &ed));
        assert_eq!(known.check("evil.example", 22, &ed), Verdict::UnknownHost);
        assert_eq!(
            known.check("git.example.evil", 22, &ed),
            Verdict::UnknownHost
        );
    }

    #[test]
    fn wildcards_match_and_negations_exclude() {
        let ed = key("ssh-ed25519", b"server key");
        let known = KnownHosts::parse(&line("*.example,!secret.example,10.0.0.?", &ed));
        assert_eq!(known.check("git.example", 22, &ed), Verdict::Trusted);
        assert_eq!(known.check("10.0.0.7", 22, &ed), Verdict::Trusted);
        assert_eq!(known.check("10.0.0.77", 22, &ed), Verdict::UnknownHost);
        assert_eq!(known.check("secret.example", 22, &ed), Verdict::UnknownHost);
    }

    #[test]
    fn a_revoked_key_is_refused_even_when_also_listed() {
        let ed = key("ssh-ed25519", b"leaked key");
        let known = KnownHosts::parse(&format!(
            "{}\n@revoked {}",
            line("git.example", &ed),
            line("*", &ed)
        ));
        assert_eq!(known.check("git.example", 22, &ed), Verdict::Revoked);
    }

    #[test]
    fn unusable_lines_are_skipped_and_trust_nothing() {
        let ed = key("ssh-ed25519", b"server key");
        let wrong_type = format!("git.example ssh-rsa {}", STANDARD.encode(&ed));
        let text = format!(
            "git.example ssh-ed25519 not-base64!\n{wrong_type}\n@cert-authority {}\n",
            line("*", &ed)
        );
        let known = KnownHosts::parse(&text);
        assert!(known.is_empty());
        assert_eq!(known.check("git.example", 22, &ed), Verdict::UnknownHost);
    }

    #[test]
    fn fingerprints_read_as_openssh_prints_them() {
        // What `ssh-keygen -lf` printed for this public key.
        let key = STANDARD
            .decode("AAAAC3NzaC1lZDI1NTE5AAAAIPVV/WzxRwsB29abjLT8m7d52InDwXcK+3mYYslJ4UMV")
            .unwrap();
        assert_eq!(key_type(&key), Some("ssh-ed25519"));
        assert_eq!(
            fingerprint(&key),
            "SHA256:2L7qabPTH58Fe/eYHgfnIaDdsi2u/8XOraOWcuq62BY"
        );
    }
}
