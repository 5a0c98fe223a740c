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
}

impl RunOutput {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    pub fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) until it exits or `deadline` passes,
/// in which case it is killed.
pub(crate) fn run(mut cmd: Command, deadline: Instant) -> io::Result<RunOutput> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (Some(status), false),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        let now = Instant::now();
        if now >= deadline {
            // Ignore "already exited" races; wait() reaps it either way.
            let _ = child.kill();
            break (child.wait().ok(), true);
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
        let out = run(cmd, Instant::now() + Duration::from_secs(30)).unwrap();
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
        let out = run(cmd, Instant::now() + Duration::from_millis(200)).unwrap();
        assert!(out.timed_out && !out.success());
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
