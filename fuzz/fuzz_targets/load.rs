//! Fuzzes the manifest loader and validator: any bytes, as a file `berth validate` reads, must
//! give objects or problems, never a panic, a hang or unbounded memory. The reports are
//! rendered too, since they slice the text at the problems' spans.
#![no_main]

use berth::manifest::diagnostic::{Summary, render_github, render_human, render_json};
use berth::manifest::load::load_bytes;
use berth::manifest::{LoadOptions, ValidateOptions, load_text, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_, objects, mut problems) = match std::str::from_utf8(data) {
        Ok(text) => load_text("fuzz.yaml".into(), text.to_string(), LoadOptions::default()),
        Err(_) => load_bytes("fuzz.yaml".into(), data.to_vec(), LoadOptions::default()),
    };
    for strict in [true, false] {
        let validated = validate(
            &objects,
            ValidateOptions {
                strict,
                ignore_unknown_kinds: !strict,
            },
        );
        problems.extend(validated.problems.into_iter().flatten());
    }
    let _ = render_human(&problems, false);
    let _ = render_github(&problems);
    let _ = render_json(&problems, &Summary::default());
});
