//! Runs the real `berth` binary against files in a temporary folder, for the end-to-end tests
//! of `berth validate`: exit code, output, wall time and the child's peak memory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long any one `berth` run may take before the test kills it and fails: a hang must
/// fail the test, never stall CI.
const HANG_LIMIT: Duration = Duration::from_secs(20);

/// A temporary folder of manifests; removed when dropped, also when a test fails.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Default for Workspace {
    fn default() -> Workspace {
        Workspace::new()
    }
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace {
            dir: tempfile::Builder::new()
                .prefix("berth-validate-test")
                .tempdir()
                .expect("create a temporary folder"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` at `relative` (creating folders) and returns the full path.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create folders");
        }
        std::fs::write(&path, contents).expect("write a fixture");
        path
    }

    /// Runs `berth ARGS` with this folder as the working directory.
    pub fn berth(&self, args: &[&str]) -> Run {
        run_berth(self.path(), args, None)
    }

    /// Runs `berth ARGS` with `input` on standard input.
    pub fn berth_stdin(&self, args: &[&str], input: impl Into<Vec<u8>>) -> Run {
        run_berth(self.path(), args, Some(input.into()))
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    /// CPU time (user + system) the child used: unlike wall time, it does not grow when
    /// other processes load the machine.
    pub cpu: Duration,
    /// The child's peak resident memory, in KiB (see [`run_berth`]).
    pub peak_rss_kib: u64,
}

impl Run {
    /// Both streams, for assertions that do not care where a message went.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Fails with the whole run in the message unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.code,
            Some(code),
            "berth {:?} exited with {:?}, expected {code}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Fails unless the output contains `needle`.
    #[track_caller]
    pub fn assert_output_contains(&self, needle: &str) -> &Run {
        assert!(
            self.output().contains(needle),
            "berth {:?}: expected the output to contain {needle:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Fails unless the output contains one of `needles`.
    #[track_caller]
    pub fn assert_output_contains_any(&self, needles: &[&str]) -> &Run {
        let output = self.output();
        assert!(
            needles.iter().any(|n| output.contains(n)),
            "berth {:?}: expected the output to contain one of {needles:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Fails if the binary panicked: a panic is never an acceptable answer to bad input.
    #[track_caller]
    pub fn assert_no_panic(&self) -> &Run {
        assert!(
            !self.stderr.contains("panicked"),
            "berth {:?} panicked:\n{}",
            self.args,
            self.stderr
        );
        self
    }
}

/// Children are run one at a time so that the CPU time and peak memory the kernel reports for
/// this process's waited-for children (`RUSAGE_CHILDREN`) can be attributed to each.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Peak memory (KiB, a running maximum) and total CPU time (a running sum) of the children
/// this process has waited for.
fn children_usage() -> (u64, Duration) {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("getrusage(RUSAGE_CHILDREN)");
    let time = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    // Linux reports ru_maxrss in KiB.
    (
        u64::try_from(usage.max_rss()).unwrap_or(0),
        time(usage.user_time()) + time(usage.system_time()),
    )
}

/// The peak resident memory the kernel has recorded for a running process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn drain(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf);
        buf
    })
}

/// Runs the binary, feeding `stdin` (or nothing) and collecting its output, exit code, wall
/// time, CPU time and peak memory. The kernel keeps the peak memory of waited-for children as
/// a running maximum: a child that raises it has exactly that peak; one that does not stayed
/// at or below it, so `peak < limit` holds for it whenever it held for the runs before.
pub fn run_berth(dir: &Path, args: &[&str], stdin: Option<Vec<u8>>) -> Run {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("RUST_BACKTRACE")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (peak_before, cpu_before) = children_usage();
    let started = Instant::now();
    let mut child = command.spawn().expect("start berth");
    let writer = stdin.map(|input| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        std::thread::spawn(move || {
            // berth may stop reading early (e.g. at a size limit); a broken pipe is fine.
            let _ = pipe.write_all(&input);
        })
    });
    let out = drain(child.stdout.take().expect("stdout is piped"));
    let err = drain(child.stderr.take().expect("stderr is piped"));
    let mut sampled_peak_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for berth") {
            break status;
        }
        sampled_peak_kib = sampled_peak_kib.max(vm_hwm_kib(child.id()).unwrap_or(0));
        if started.elapsed() > HANG_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth {args:?} did not finish within {HANG_LIMIT:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let elapsed = started.elapsed();
    let (peak_after, cpu_after) = children_usage();
    // A new running maximum is this child's exact peak. Otherwise its peak is at most the old
    // maximum, which is below any limit unless an earlier run already broke it; then the
    // peak sampled while it ran is the best figure there is.
    let peak_rss_kib = if peak_after > peak_before {
        peak_after
    } else {
        sampled_peak_kib
    };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = String::from_utf8_lossy(&out.join().expect("read stdout")).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().expect("read stderr")).into_owned();
    Run {
        args: args.iter().map(|a| (*a).to_string()).collect(),
        code: status.code(),
        stdout,
        stderr,
        elapsed,
        cpu: cpu_after.saturating_sub(cpu_before),
        peak_rss_kib,
    }
}
