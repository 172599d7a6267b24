//! Rebuilds when the committed schemas change: they are embedded with `include_dir!`.

fn main() {
    println!("cargo:rerun-if-changed=schemas");
}
