//! The test harness's own tests: the one wait reports what it last saw, the golden-file
//! assertion reports every difference, the normalising of ages keeps columns, and no public
//! helper of `tests/support/` is left that no test calls (rustc cannot tell: the harness is
//! each test binary's public interface, see `support/mod.rs`).

pub mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::cli::{is_age, normalise_table};
use support::golden::Golden;
use support::{accept, eventually, eventually_blocking, poll};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names `pub fn`, `pub struct`, … declare in `text`.
fn public_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("pub") {
            continue;
        }
        let mut kind = words.next();
        if kind == Some("async") {
            kind = words.next();
        }
        if !matches!(
            kind,
            Some("fn" | "struct" | "enum" | "const" | "static" | "type" | "trait")
        ) {
            continue;
        }
        let name: String = words
            .next()
            .unwrap_or("")
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            names.push(name);
        }
    }
    names
}

/// How often `name` appears in `text` as a whole identifier.
fn mentions(text: &str, name: &str) -> usize {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(name)
        .filter(|(at, _)| {
            let before = text[..*at].chars().next_back();
            let after = text[at + name.len()..].chars().next();
            !before.is_some_and(ident) && !after.is_some_and(ident)
        })
        .count()
}

#[test]
fn every_public_helper_of_the_harness_is_used_somewhere() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut support_files = Vec::new();
    rust_files(&root.join("tests/support"), &mut support_files);
    let mut all = Vec::new();
    rust_files(&root.join("tests"), &mut all);
    rust_files(&root.join("benches"), &mut all);
    let corpus: String = all
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read a test file"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut unused = BTreeMap::new();
    for file in &support_files {
        let text = std::fs::read_to_string(file).expect("read a support file");
        for name in public_names(&text) {
            // Once where it is declared; a helper someone calls is named at least twice.
            if mentions(&corpus, &name) < 2 {
                unused.insert(name, file.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    assert!(
        unused.is_empty(),
        "public helpers nothing uses (remove them): {unused:#?}"
    );
}

#[test]
fn the_usage_check_finds_declarations_and_whole_names_only() {
    let text = "pub fn used() {}\npub async fn waits() {}\npub struct Thing;\nfn private() {}\n";
    assert_eq!(public_names(text), ["used", "waits", "Thing"]);
    assert_eq!(mentions("used unused used_up (used)", "used"), 2);
}

#[tokio::test]
async fn eventually_returns_the_first_yes() {
    let mut asked = 0;
    let value = eventually("the third answer", Duration::from_secs(5), || {
        asked += 1;
        let n = asked;
        async move { accept(n, |n| *n == 3) }
    })
    .await;
    assert_eq!(value, 3);
}

#[tokio::test]
#[should_panic(expected = "the impossible: not within 300ms; last seen: 7")]
async fn eventually_fails_naming_what_and_the_last_state() {
    eventually("the impossible", Duration::from_millis(300), || async {
        accept(7, |_| false)
    })
    .await;
}

#[tokio::test]
async fn poll_keeps_asking_until_the_deadline_and_hands_back_the_last_answer() {
    let started = Instant::now();
    let last = poll(Duration::from_millis(300), || async { None::<()> }).await;
    assert_eq!(last, Err("None"));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[test]
#[should_panic(expected = "never: not within")]
fn eventually_blocking_fails_like_eventually() {
    eventually_blocking("never", Duration::from_millis(200), || false);
}

#[test]
fn a_golden_difference_names_the_file_and_shows_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.txt");
    std::fs::write(&path, "expected\n").unwrap();
    let mut golden = Golden::new();
    golden.check(&path, "expected\n");
    golden.check(&path, "actual\n");
    let failure =
        std::panic::catch_unwind(move || golden.finish()).expect_err("a difference fails the test");
    let message = failure
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(
        message.contains("out.txt")
            && message.contains("--- expected\nexpected\n")
            && message.contains("+++ actual\nactual\n"),
        "{message}"
    );
}

#[test]
fn ages_are_recognised_and_normalised_without_moving_columns() {
    for age in ["5s", "119s", "3m20s", "2d", "8y"] {
        assert!(is_age(age), "{age}");
    }
    for word in ["web", "1/1", "0", "s5", "5x"] {
        assert!(!is_age(word), "{word}");
    }
    assert_eq!(
        normalise_table("NAME   DATA   AGE\na      1      12s\n"),
        "NAME   DATA   AGE\na      1      <age>\n"
    );
}

/// `nft list table` of rules as the agent writes them (listed by nft 1.0).
const LISTED_TABLE: &str = "table ip berth_x {
\tchain services {
\t\tip daddr 10.96.201.10 tcp dport 80 goto svc_0 comment \"default/web:http\"
\t\tip daddr 10.96.201.11 tcp dport 80 goto svc_1 comment \"default/other:http\"
\t}

\tchain svc_0 {
\t\tnumgen inc mod 2 vmap { 0 : goto ep_0_0, 1 : goto ep_0_1 }
\t}

\tchain ep_0_0 {
\t\tip saddr 10.244.201.2 meta mark set meta mark | 0x00004000
\t\tmeta l4proto tcp dnat to 10.244.201.2:8080
\t}

\tchain ep_0_1 {
\t\tmeta l4proto tcp dnat to 10.244.201.3:8080
\t}

\tchain svc_1 {
\t\tgoto ep_1_0
\t}

\tchain ep_1_0 {
\t\tmeta l4proto tcp dnat to 10.244.201.2:8080
\t}
}
";

#[test]
fn the_backends_of_an_address_are_read_from_its_own_chains_only() {
    use support::services::nft_backends;
    assert_eq!(
        nft_backends(LISTED_TABLE, "10.96.201.10", 80),
        ["10.244.201.2:8080", "10.244.201.3:8080"]
    );
    assert_eq!(
        nft_backends(LISTED_TABLE, "10.96.201.11", 80),
        ["10.244.201.2:8080"]
    );
    assert!(nft_backends(LISTED_TABLE, "10.96.201.12", 80).is_empty());
}
