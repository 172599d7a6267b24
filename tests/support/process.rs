//! A child process a test started (`berth server`, `berth agent`, `berth up`): its output
//! lines on channels, echoed to the test's stderr (shown when the test fails), a wait for the
//! line that says it is ready, a signal to stop it, and a kill on drop, also when a test fails.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A running child; killed and reaped on drop.
pub struct Process {
    name: String,
    child: Option<Child>,
    // In a Mutex only so that a Server or Agent holding this may be shared across tasks.
    stdout: Mutex<Receiver<String>>,
    stderr: Option<Mutex<Receiver<String>>>,
    /// The threads reading stdout and stderr; they end at the streams' end.
    readers: Vec<std::thread::JoinHandle<()>>,
    /// Every stdout line read so far, for failure messages.
    seen: Vec<String>,
}

fn forward(
    name: String,
    stream: impl Read + Send + 'static,
    readers: &mut Vec<std::thread::JoinHandle<()>>,
) -> Mutex<Receiver<String>> {
    let (tx, rx) = channel();
    readers.push(std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            eprintln!("{name}: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    }));
    Mutex::new(rx)
}

impl Process {
    /// Starts `command` with its stdout piped to this handle; its stderr is read too when the
    /// command set it to `Stdio::piped()`, and otherwise left where the command sent it.
    pub fn spawn(name: &str, command: &mut Command) -> Process {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let mut readers = Vec::new();
        let stdout = forward(
            name.into(),
            child.stdout.take().expect("stdout is piped"),
            &mut readers,
        );
        let stderr = child
            .stderr
            .take()
            .map(|s| forward(name.into(), s, &mut readers));
        Process {
            name: name.into(),
            child: Some(child),
            stdout,
            stderr,
            readers,
            seen: Vec::new(),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Reads stdout until `pick` takes a line; fails the test after `timeout`, or when the
    /// process ends first, with every line it printed.
    pub fn wait_line<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&str) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = self.stdout.get_mut().expect("stdout").recv_timeout(left);
            match next {
                Ok(line) => {
                    let picked = pick(&line);
                    self.seen.push(line);
                    if let Some(value) = picked {
                        return value;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: {what} not within {timeout:?}; its output:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: exited before {what}; its output:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The stderr lines read so far (when stderr was piped); all of them once
    /// [`Process::wait_exit`] saw the process end.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .as_ref()
            .map(|rx| rx.lock().expect("stderr").try_iter().collect())
            .unwrap_or_default()
    }

    /// Sends `signal` (`TERM`, `INT`) and returns at once.
    pub fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
    }

    /// Waits up to `timeout` for the process to end; its exit status, or `None` while it
    /// still runs. Once it ended, its output has been read to the end.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let status = super::poll_blocking(timeout, || child.try_wait().ok().flatten()).ok()?;
        self.child = None;
        // The readers end at the streams' end, unless a child of the process holds them.
        let readers = std::mem::take(&mut self.readers);
        let _ = super::poll_blocking(Duration::from_secs(5), || {
            readers.iter().all(std::thread::JoinHandle::is_finished)
        });
        Some(status)
    }

    /// Sends `signal` and waits up to `grace` for the exit. `Err` when it had to be killed,
    /// with the status it then had.
    pub fn stop(
        &mut self,
        signal: &str,
        grace: Duration,
    ) -> Result<ExitStatus, Option<ExitStatus>> {
        self.signal(signal);
        match self.wait_exit(grace) {
            Some(status) => Ok(status),
            None => {
                let mut child = self.child.take();
                Err(child.as_mut().and_then(|c| {
                    let _ = c.kill();
                    c.wait().ok()
                }))
            }
        }
    }

    /// Kills the process at once (a crash, a power cut).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
