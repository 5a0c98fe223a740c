//! Running a subprocess with a deadline and bounded output capture.

use std::io::{self, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How much of each stream is kept: the *last* bytes, because pip prints its verdict at the end.
pub(crate) const OUTPUT_CAP: usize = 64 * 1024;
const POLL: Duration = Duration::from_millis(50);
/// How long to wait for the pipe readers once the process has exited (a grandchild holding
/// the pipe open must not hang us).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

pub(crate) struct RunOutput {
    /// `None` if the process was killed and its status could not be collected.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    /// Killed because the watched folders grew past the budget.
    pub too_large: bool,
}

impl RunOutput {
    pub fn success(&self) -> bool {
        !self.timed_out && !self.too_large && self.status.is_some_and(|s| s.success())
    }

    pub fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Bytes of the regular files under `dirs` (symlinks not followed).
pub(crate) fn tree_bytes(dirs: &[std::path::PathBuf]) -> u64 {
    let mut total = 0u64;
    let mut stack: Vec<std::path::PathBuf> = dirs.to_vec();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(entry.path()),
                Ok(kind) if kind.is_file() => {
                    total += entry.metadata().map(|m| m.len()).unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    total
}

/// What a run may write: the folders to watch and their byte budget.
pub(crate) struct Budget<'a> {
    pub dirs: &'a [std::path::PathBuf],
    pub bytes: u64,
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) until it exits or `deadline` passes,
/// in which case it is killed; it is also killed once the folders of `budget` hold more than
/// its bytes (pip's downloads are otherwise unbounded until it finishes).
pub(crate) fn run(
    mut cmd: Command,
    deadline: Instant,
    budget: Option<Budget<'_>>,
) -> io::Result<RunOutput> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let (status, timed_out, too_large) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (Some(status), false, false),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        if let Some(budget) = &budget
            && tree_bytes(budget.dirs) > budget.bytes
        {
            let _ = child.kill();
            break (child.wait().ok(), false, true);
        }
        let now = Instant::now();
        if now >= deadline {
            // Ignore "already exited" races; wait() reaps it either way.
            let _ = child.kill();
            break (child.wait().ok(), true, false);
        }
        thread::sleep(POLL.min(deadline - now));
    };
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        let bytes = rx.recv_timeout(DRAIN_GRACE).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok(RunOutput {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
        timed_out,
        too_large,
    })
}

/// Reads a pipe to its end on a thread (so the child never blocks on a full pipe), keeping
/// only the last [`OUTPUT_CAP`] bytes.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    let Some(mut pipe) = pipe else {
        let _ = tx.send(Vec::new());
        return rx;
    };
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&chunk[..n]);
                    if kept.len() > 2 * OUTPUT_CAP {
                        kept.drain(..kept.len() - OUTPUT_CAP);
                    }
                }
            }
        }
        if kept.len() > OUTPUT_CAP {
            kept.drain(..kept.len() - OUTPUT_CAP);
        }
        let _ = tx.send(kept);
    });
    rx
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn captures_the_tail_of_large_output() {
        let mut cmd = Command::new("sh");
        // 200 KiB of 'x' then a verdict line; only the tail is kept.
        cmd.args([
            "-c",
            "head -c 204800 /dev/zero | tr '\\0' x; echo; echo VERDICT >&2; echo END",
        ]);
        let out = run(cmd, Instant::now() + Duration::from_secs(30), None).unwrap();
        assert!(out.success());
        assert!(out.stdout.len() <= OUTPUT_CAP);
        assert!(out.stdout.ends_with("END\n"));
        assert_eq!(out.stderr, "VERDICT\n");
    }

    #[test]
    fn kills_on_timeout() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let started = Instant::now();
        let out = run(cmd, Instant::now() + Duration::from_millis(200), None).unwrap();
        assert!(out.timed_out && !out.success());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
