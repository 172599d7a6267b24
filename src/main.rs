//! The `berth` binary: parses the command line and hands over to [`berth::cli`].

// Parsing manifests allocates many small strings; mimalloc makes that markedly cheaper than
// the system allocator (measured in BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    berth::cli::main()
}
