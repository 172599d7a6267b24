//! The local terminal for `berth exec -t`: raw mode (keys go to the remote shell as typed)
//! restored on drop, and the window size, both through `stty` so no unsafe ioctl is needed.

use std::io::IsTerminal;
use std::process::{Command, Stdio};

/// Runs `stty ARGS` on our stdin; its output on success.
fn stty(args: &[&str]) -> Option<String> {
    let output = Command::new("stty")
        .args(args)
        .stdin(Stdio::inherit())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Whether stdin is a terminal a TTY session can use.
pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// The terminal in raw mode; dropping it restores the saved settings.
pub struct RawTerminal {
    saved: String,
}

impl RawTerminal {
    /// Switches stdin's terminal to raw mode without echo; `None` when it is not a terminal
    /// or `stty` is missing.
    pub fn enter() -> Option<RawTerminal> {
        if !stdin_is_terminal() {
            return None;
        }
        let saved = stty(&["-g"])?;
        stty(&["raw", "-echo"])?;
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = stty(&[&self.saved]);
    }
}

/// `(columns, rows)` of the terminal on stdin.
pub fn size() -> Option<(u16, u16)> {
    let size = stty(&["size"])?;
    let (rows, columns) = size.split_once(' ')?;
    Some((columns.parse().ok()?, rows.parse().ok()?))
}
