//! Helpers for the client-verb tests: run the real `berth` binary against a live server with
//! its kubeconfig, and golden files for what users read, with the values that change from run
//! to run (ages, times) normalised, compared with golden files in `tests/golden/cli/`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `berth ARGS` with the server's kubeconfig and a HOME of its own.
pub fn berth(kubeconfig: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env_remove("BERTH_TOKEN")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run berth")
}

/// Whether a word is an age as kubectl prints it (`5s`, `3m20s`, `2d`).
pub fn is_age(word: &str) -> bool {
    let mut rest = word;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        let unit = rest[digits..].chars().next();
        if digits == 0 || !matches!(unit, Some('s' | 'm' | 'h' | 'd' | 'y')) {
            return false;
        }
        rest = &rest[digits + 1..];
        parts += 1;
    }
    parts > 0
}

/// A table whose last column is AGE, with every age written as `<age>`.
pub fn normalise_table(text: &str) -> String {
    text.lines()
        .map(|line| match line.rsplit_once(' ') {
            Some((head, last)) if is_age(last) => format!("{head} <age>\n"),
            _ => format!("{line}\n"),
        })
        .collect()
}

/// A describe page with times as `<time>` and the Events table's ages as `<age>`, the table
/// realigned as describe aligns it (two blanks after the widest cell).
pub fn normalise_describe(text: &str) -> String {
    let mut out = String::new();
    let mut events: Vec<Vec<String>> = Vec::new();
    let flush = |events: &mut Vec<Vec<String>>, out: &mut String| {
        let mut widths: Vec<usize> = Vec::new();
        for row in events.iter() {
            for (i, cell) in row.iter().enumerate() {
                let w = cell.chars().count() + 2;
                match widths.get_mut(i) {
                    Some(old) => *old = (*old).max(w),
                    None => widths.push(w),
                }
            }
        }
        for row in events.drain(..) {
            let mut line = String::from("  ");
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    line.push_str(&" ".repeat(widths[i] - cell.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    };
    let mut in_events = false;
    for line in text.lines() {
        if line == "Events:" {
            in_events = true;
            out.push_str("Events:\n");
            continue;
        }
        if in_events && line.starts_with("  ") {
            let mut cells: Vec<String> = line
                .trim()
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            if cells.len() > 2 && is_age(cells[2].split(' ').next().unwrap_or("")) {
                cells[2] = "<age>".into();
            }
            events.push(cells);
            continue;
        }
        if in_events {
            flush(&mut events, &mut out);
            in_events = false;
        }
        let timestamped = ["CreationTimestamp:", "Start Time:", "Started:"]
            .iter()
            .find(|k| line.trim_start().starts_with(*k));
        match timestamped {
            Some(_) => {
                // Keep the key and its padding, replace the value.
                let value_at = line
                    .find(':')
                    .map(|i| i + 1 + line[i + 1..].len() - line[i + 1..].trim_start().len())
                    .unwrap_or(line.len());
                out.push_str(&line[..value_at]);
                out.push_str("<time>\n");
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    flush(&mut events, &mut out);
    out
}

/// Compares with `tests/golden/cli/NAME` (see [`super::golden`]).
pub fn assert_golden(name: &str, actual: &str) {
    super::golden::assert_golden(&super::golden::dir("cli").join(name), actual);
}
