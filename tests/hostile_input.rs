//! Hostile input never hurts: alias bombs, absurd nesting, huge documents, binary files,
//! broken encodings and pathological shapes each get a clear error from `berth validate`
//! within a second, in bounded memory, with no panic and no hang.

pub mod support;

use std::fmt::Write as _;
use std::time::Duration;

use support::workspace::{Run, Workspace};

/// A pre-commit hook that stalls for more than a second on one file is a broken hook. The
/// promise is for the optimised build; tests usually run the unoptimised one, which gets more.
const TIME_LIMIT: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(2)
} else {
    Duration::from_secs(1)
};
/// Wall time is checked too, with room for a machine busy with other work (a shared runner,
/// parallel builds: 6× slowdowns were seen on a busy 2-core machine). CPU time is what shows
/// work growing out of bounds; wall time catches waiting and hanging.
const WALL_LIMIT: Duration = if cfg!(debug_assertions) {
    Duration::from_secs(10)
} else {
    Duration::from_secs(5)
};
/// Far above what validating a few MiB needs, far below what an expanded bomb takes.
const MEMORY_LIMIT_KIB: u64 = 200 * 1024;

/// Runs `berth validate FILE` on `contents` and checks the common promises: the exit code,
/// no panic, a message that names the problem, and the time and memory bounds.
#[track_caller]
fn refused(name: &str, contents: impl AsRef<[u8]>, extra: &[&str], expect: &[&str]) -> Run {
    let ws = Workspace::new();
    ws.write(name, contents);
    let mut args = vec!["validate"];
    args.extend_from_slice(extra);
    args.push(name);
    let run = ws.berth(&args);
    run.assert_no_panic().assert_code(1);
    for needle in expect {
        run.assert_output_contains(needle);
    }
    within_bounds(&run);
    run
}

#[track_caller]
fn within_bounds(run: &Run) {
    // Seen with `--nocapture`: how close each case comes to its limits.
    eprintln!(
        "berth {:?}: {:?} CPU, {:?} wall, {} MiB",
        run.args.last(),
        run.cpu,
        run.elapsed,
        run.peak_rss_kib / 1024
    );
    assert!(
        run.cpu < TIME_LIMIT && run.elapsed < WALL_LIMIT,
        "berth {:?} took {:?} of CPU time in {:?} (limits {TIME_LIMIT:?} and {WALL_LIMIT:?})",
        run.args,
        run.cpu,
        run.elapsed
    );
    assert!(
        run.peak_rss_kib < MEMORY_LIMIT_KIB,
        "berth {:?} used up to {} MiB (limit {} MiB)",
        run.args,
        run.peak_rss_kib / 1024,
        MEMORY_LIMIT_KIB / 1024
    );
    // A few problems must not become pages of output either: a terminal or a CI log has to
    // stay readable.
    assert!(
        run.stdout.len() + run.stderr.len() < 256 * 1024,
        "berth {:?} printed {} bytes",
        run.args,
        run.stdout.len() + run.stderr.len()
    );
}

#[test]
fn billion_laughs_alias_bomb() {
    let mut text = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\nlol0: &lol0 \"lol\"\n",
    );
    for i in 1..=9 {
        let refs = vec![format!("*lol{}", i - 1); 10].join(", ");
        writeln!(text, "lol{i}: &lol{i} [{refs}]").unwrap();
    }
    refused("bomb.yaml", text, &[], &["bomb.yaml:", "alias"]);
}

#[test]
fn alias_bomb_of_mappings_in_block_style() {
    // The same bomb built from mappings, with each level on its own lines.
    let mut text = String::from("a0: &a0 {k: v}\n");
    for i in 1..=12 {
        writeln!(text, "a{i}: &a{i}").unwrap();
        for j in 0..10 {
            writeln!(text, "  k{j}: *a{}", i - 1).unwrap();
        }
    }
    refused("bomb.yaml", text, &[], &["bomb.yaml:", "alias"]);
}

/// How a nesting limit may be named.
const NESTING: &[&str] = &["nesting", "recursion limit"];

#[test]
fn flow_nesting_deeper_than_ten_thousand() {
    let depth = 12_000;
    let text = format!("{}{}\n", "[".repeat(depth), "]".repeat(depth));
    refused("deep.yaml", text, &[], &["deep.yaml:1:"]).assert_output_contains_any(NESTING);
    let text = format!("a: {}1{}\n", "{a: ".repeat(depth), "}".repeat(depth));
    refused("deep.yaml", text, &[], &["deep.yaml:1:"]).assert_output_contains_any(NESTING);
}

#[test]
fn block_nesting_deeper_than_ten_thousand() {
    // Compact block sequences nest one level per `- ` on a single line.
    let text = format!("{}x\n", "- ".repeat(12_000));
    refused("deep.yaml", text, &[], &["deep.yaml:1:"]).assert_output_contains_any(NESTING);
    // Block mappings, one level per line, one more space each time.
    let mut text = String::new();
    for level in 0..2_000 {
        writeln!(text, "{}k:", " ".repeat(level)).unwrap();
    }
    refused("deep.yaml", text, &[], &["deep.yaml:"]).assert_output_contains_any(NESTING);
}

#[test]
fn unclosed_deep_nesting() {
    // The opening brackets alone, never closed: the parser must not recurse on them either.
    refused("deep.yaml", "[".repeat(100_000), &[], &["deep.yaml:1:"]);
    refused("deep.yaml", "{a: ".repeat(50_000), &[], &["deep.yaml:1:"]);
}

fn big_config_map(value_bytes: usize) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  blob: {}\n",
        "x".repeat(value_bytes)
    )
}

#[test]
fn a_document_over_three_mib_is_refused_and_the_limit_is_configurable() {
    let text = big_config_map(3 * 1024 * 1024 + 100);
    refused(
        "big.yaml",
        &text,
        &[],
        &["big.yaml:", "larger than", "--max-document-bytes"],
    );
    refused(
        "small.yaml",
        big_config_map(2000),
        &["--max-document-bytes", "1000"],
        &["small.yaml:", "1000"],
    );
    // Raised, the limit lets the big document through.
    let ws = Workspace::new();
    ws.write("big.yaml", &text);
    let run = ws.berth(&["validate", "--max-document-bytes", "8000000", "big.yaml"]);
    run.assert_no_panic().assert_code(0);
}

#[test]
fn the_size_limit_is_per_document_not_per_file() {
    let ws = Workspace::new();
    let mut text = String::new();
    for i in 0..4 {
        text.push_str(&big_config_map(1024 * 1024).replace("name: big", &format!("name: big{i}")));
        text.push_str("---\n");
    }
    ws.write("four.yaml", text);
    let run = ws.berth(&["validate", "four.yaml"]);
    run.assert_no_panic().assert_code(0);
    within_bounds(&run);
}

#[test]
fn a_huge_document_on_stdin() {
    let ws = Workspace::new();
    let run = ws.berth_stdin(
        &["validate", "-f", "-"],
        big_config_map(3 * 1024 * 1024 + 100),
    );
    run.assert_no_panic()
        .assert_code(1)
        .assert_output_contains("<stdin>:")
        .assert_output_contains("larger than");
    within_bounds(&run);
}

#[test]
fn a_binary_file() {
    let mut elf = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    elf.extend((0..64 * 1024).map(|i| (i * 7 % 256) as u8));
    refused("tool.yaml", elf, &[], &["tool.yaml", "binary"]);
}

#[test]
fn invalid_utf8_names_where() {
    let text = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: caf\xe9\n".to_vec();
    refused("latin1.yaml", text, &[], &["latin1.yaml:4:", "UTF-8"]);
}

#[test]
fn utf16_is_refused_clearly() {
    // Windows tools write UTF-16 with a byte-order mark: many NULs, not a crash.
    let text: Vec<u8> = "\u{feff}apiVersion: v1\nkind: ConfigMap\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    refused("utf16.yaml", text, &[], &["utf16.yaml"]);
}

#[test]
fn unterminated_quoted_strings() {
    refused(
        "open.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"open\ndata:\n  a: b\n",
        &[],
        &["open.yaml:", "quoted"],
    );
    refused(
        "open.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: 'open\n",
        &[],
        &["open.yaml:", "quoted"],
    );
    // A long unterminated string is no slower.
    let text = format!(
        "apiVersion: v1\nkind: ConfigMap\ndata:\n  a: \"{}",
        "word ".repeat(400_000)
    );
    refused("open.yaml", text, &[], &["open.yaml:4:"]);
}

#[test]
fn unterminated_flow_collections() {
    refused(
        "open.yaml",
        "apiVersion: v1\nkind: ConfigMap\ndata: {a: b, c: d\n",
        &[],
        &["open.yaml:"],
    );
}

#[test]
fn a_huge_number_of_keys_is_fast() {
    let mut text =
        String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: many\ndata:\n");
    for i in 0..100_000 {
        writeln!(text, "  key{i}: v").unwrap();
    }
    let ws = Workspace::new();
    ws.write("many.yaml", &text);
    let run = ws.berth(&["validate", "many.yaml"]);
    run.assert_no_panic().assert_code(0);
    within_bounds(&run);
}

#[test]
fn a_huge_number_of_duplicate_keys() {
    let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\ndata:\n");
    for i in 0..20_000 {
        writeln!(text, "  key{i}: v").unwrap();
    }
    for i in 0..20_000 {
        writeln!(text, "  key{i}: again").unwrap();
    }
    refused("dup.yaml", text, &[], &["dup.yaml:", "duplicate key"]);
}

#[test]
fn a_huge_number_of_problems_in_one_file() {
    // 50,000 wrong values: every one is a problem, and reporting them must stay fast.
    let mut text =
        String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: wrong\ndata:\n");
    for i in 0..50_000 {
        writeln!(text, "  key{i}: {i}").unwrap();
    }
    let ws = Workspace::new();
    ws.write("wrong.yaml", &text);
    let run = ws.berth(&["validate", "wrong.yaml"]);
    run.assert_no_panic().assert_code(1);
    assert!(
        run.cpu < TIME_LIMIT && run.elapsed < WALL_LIMIT,
        "took {:?} of CPU time in {:?}",
        run.cpu,
        run.elapsed
    );
    assert!(
        run.peak_rss_kib < MEMORY_LIMIT_KIB,
        "used {} MiB",
        run.peak_rss_kib / 1024
    );
}

#[test]
fn merge_keys_from_a_large_anchor() {
    let mut text =
        String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: merged\nx-base: &base\n");
    for i in 0..40_000 {
        writeln!(text, "  key{i}: v").unwrap();
    }
    text.push_str("data:\n  <<: *base\n");
    let ws = Workspace::new();
    ws.write("merge.yaml", &text);
    let run = ws.berth(&["validate", "--no-strict", "merge.yaml"]);
    run.assert_no_panic();
    within_bounds(&run);
}

#[test]
fn nested_anchors_do_not_multiply_memory() {
    // Every level is anchored and holds a wide list: copying each anchored subtree when its
    // anchor is defined costs depth × size, though no alias is ever used. About 230 KiB.
    let (depth, width) = (150, 1_500);
    let mut text = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: anchors\nx:");
    let items = format!("[{}]", vec!["1"; width].join(","));
    for level in 0..depth {
        let pad = "  ".repeat(level);
        write!(text, " &a{level}\n{pad}- {items}\n{pad}-").unwrap();
    }
    text.push_str(" end\n");
    let ws = Workspace::new();
    ws.write("anchors.yaml", &text);
    let run = ws.berth(&["validate", "--no-strict", "anchors.yaml"]);
    run.assert_no_panic();
    within_bounds(&run);
}

#[test]
fn very_long_lines() {
    // One 2 MiB line, valid.
    let ws = Workspace::new();
    ws.write("long.yaml", big_config_map(2 * 1024 * 1024));
    let run = ws.berth(&["validate", "long.yaml"]);
    run.assert_no_panic().assert_code(0);
    within_bounds(&run);
    // A whole object on one 1 MiB line with a mistake at its very end.
    let filler: Vec<String> = (0..60_000).map(|i| format!("k{i}: v")).collect();
    let text = format!(
        "{{apiVersion: v1, kind: ConfigMap, metadata: {{name: one-line}}, data: {{{}}}, extra: 1}}\n",
        filler.join(", ")
    );
    refused("line.yaml", text, &[], &["line.yaml:1:", "extra"]);
}

#[test]
fn many_tiny_documents() {
    let mut text = String::new();
    for i in 0..20_000 {
        writeln!(
            text,
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c{i}\n"
        )
        .unwrap();
    }
    let ws = Workspace::new();
    ws.write("many.yaml", &text);
    let run = ws.berth(&["validate", "many.yaml"]);
    run.assert_no_panic().assert_code(0);
    within_bounds(&run);
}

#[test]
fn undefined_alias_and_stray_characters() {
    refused(
        "alias.yaml",
        "apiVersion: v1\nkind: ConfigMap\ndata: *nowhere\n",
        &[],
        &["alias.yaml:3:"],
    );
    refused(
        "tab.yaml",
        "apiVersion: v1\nkind: ConfigMap\n\tdata: {}\n",
        &[],
        &["tab.yaml:", "tab"],
    );
    refused("at.yaml", "@kind: x\n", &[], &["at.yaml:1:"]);
}
