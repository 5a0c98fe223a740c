//! Opening the store: the pools for its backend, then the migrations.
//!
//! SQLite: the file is created when missing (a `tasks.db` of an earlier version is adopted:
//! its schema is the first migration's). A file that SQLite says is damaged (not a
//! database, or failing its quick check) is moved aside, logged with its new name, and a new
//! one is started: the server serves what it can rather than refuse to start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection as _, Executor as _};

use super::{Backend, Inner, Location, Store, migrations};

/// Connections to PostgreSQL per node.
const PG_CONNECTIONS: u32 = 8;
/// Read connections to SQLite (writes have one of their own).
const SQLITE_READERS: u32 = 4;
/// How long a query waits for a connection, and SQLite for a lock, before it fails.
const WAIT: Duration = Duration::from_secs(10);

/// Every SQLite connection's settings. WAL: readers never wait for the writer. FULL: every
/// commit is fsynced before it returns, so an answered request survives a power loss too.
const SQLITE_PRAGMAS: &str =
    "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 10000;";

/// The file name of the embedded store in the data dir.
pub const SQLITE_FILE: &str = "scriptbox.db";
/// What earlier versions called it (it held only tasks).
const LEGACY_FILE: &str = "tasks.db";

impl Store {
    /// Opens (creating when needed) the store and brings its schema up to date.
    pub async fn open(location: &Location) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let store = match location {
            Location::Sqlite(path) => open_sqlite(path).await?,
            Location::Postgres(url) => open_postgres(url).await?,
        };
        migrations::run(&store)
            .await
            .context("bringing the store's schema up to date")?;
        Ok(store)
    }

    /// The embedded store in `data_dir`.
    pub fn in_data_dir(data_dir: &Path) -> Location {
        Location::Sqlite(data_dir.join(SQLITE_FILE))
    }
}

async fn open_postgres(url: &str) -> anyhow::Result<Store> {
    let pool = AnyPoolOptions::new()
        .max_connections(PG_CONNECTIONS)
        .acquire_timeout(WAIT)
        .connect(url)
        .await
        // The URL may hold a password: never in the message.
        .context("connecting to the PostgreSQL store")?;
    Ok(Store {
        inner: Arc::new(Inner {
            backend: Backend::Postgres,
            write: pool.clone(),
            read: pool,
        }),
        node: "".into(),
    })
}

async fn open_sqlite(path: &Path) -> anyhow::Result<Store> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    adopt_legacy(path);
    match sqlite_pools(path).await? {
        Ok(store) => Ok(store),
        Err(damage) => {
            // A damaged file: keep it for the operator, start a new one.
            let aside = set_aside(path)?;
            tracing::error!(
                %damage,
                kept = %aside.display(),
                "the store was damaged; it was moved aside and a new, empty one started \
                 (tools, scripts, tasks and API tenants recorded in it are not restored)"
            );
            sqlite_pools(path)
                .await?
                .map_err(|damage| anyhow::anyhow!("a new store is damaged too: {damage}"))
        }
    }
}

/// An earlier version's `tasks.db` becomes the store, when there is no store yet.
fn adopt_legacy(path: &Path) {
    let legacy = path.with_file_name(LEGACY_FILE);
    if path.exists() || !legacy.exists() {
        return;
    }
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", legacy.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", path.display()));
            if let Err(err) = std::fs::rename(&from, &to) {
                tracing::warn!(cause = %err, "could not adopt the earlier task store");
                return;
            }
        }
    }
    tracing::info!("the earlier task store (tasks.db) is now the store");
}

/// Moves a damaged store and its WAL files to `<name>.damaged-<unix time>`.
fn set_aside(path: &Path) -> anyhow::Result<PathBuf> {
    let stamp = super::now() as u64;
    let aside = PathBuf::from(format!("{}.damaged-{stamp}", path.display()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", aside.display()));
            std::fs::rename(&from, &to)
                .with_context(|| format!("moving the damaged store {}", from.display()))?;
        }
    }
    Ok(aside)
}

/// The pools of the SQLite file at `path`; `Ok(Err(what))` when SQLite finds the file is not
/// a database or is damaged (other failures, such as a full disk, are errors: the file is
/// then left alone).
async fn sqlite_pools(path: &Path) -> anyhow::Result<Result<Store, String>> {
    let url = sqlite_url(path);
    // One plain connection first: a damaged file fails here, at once, rather than in every
    // pooled connection's set-up until the pool gives up.
    let mut probe = match AnyConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(err) if is_damage(&err) => return Ok(Err(err.to_string())),
        Err(err) => return Err(err).context("opening the SQLite store"),
    };
    let check: Result<(String,), sqlx::Error> = match probe.execute(SQLITE_PRAGMAS).await {
        Ok(_) => {
            sqlx::query_as("PRAGMA quick_check")
                .fetch_one(&mut probe)
                .await
        }
        Err(err) => Err(err),
    };
    let _ = probe.close().await;
    match check {
        Ok((verdict,)) if verdict == "ok" => {}
        Ok((verdict,)) => return Ok(Err(verdict)),
        Err(err) if is_damage(&err) => return Ok(Err(err.to_string())),
        Err(err) => return Err(err).context("checking the SQLite store"),
    }
    let write = sqlite_pool(&url, 1)
        .await
        .context("opening the SQLite store")?;
    let read = sqlite_pool(&url, SQLITE_READERS)
        .await
        .context("opening the SQLite store")?;
    Ok(Ok(Store {
        inner: Arc::new(Inner {
            backend: Backend::Sqlite,
            write,
            read,
        }),
        node: "".into(),
    }))
}

/// SQLite's "damaged" (`SQLITE_CORRUPT`) and "not a database" (`SQLITE_NOTADB`), extended
/// codes included.
fn is_damage(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    db.code()
        .and_then(|code| code.parse::<i64>().ok())
        .is_some_and(|code| matches!(code & 0xff, 11 | 26))
}

async fn sqlite_pool(url: &str, connections: u32) -> Result<AnyPool, sqlx::Error> {
    AnyPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(WAIT)
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(SQLITE_PRAGMAS).await?;
                Ok(())
            })
        })
        .connect(url)
        .await
}

/// The `sqlite://` URL of `path` (created when missing), with the bytes a URL path cannot
/// hold percent-encoded.
fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    for byte in path.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() || b"/._-~".contains(byte) {
            url.push(char::from(*byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url.push_str("?mode=rwc");
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_paths_are_encoded() {
        assert_eq!(
            sqlite_url(Path::new("/var/lib/a b/x?y#z.db")),
            "sqlite:///var/lib/a%20b/x%3Fy%23z.db?mode=rwc"
        );
    }
}

#[cfg(test)]
mod damage_tests {
    use super::*;

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_set_aside() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("scriptbox.db");
        std::fs::write(&path, b"this is not an SQLite database at all, truncated").expect("w");
        let store = open_sqlite(&path).await.expect("opened");
        assert!(store.reachable().await);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert!(
            names.iter().any(|n| n.starts_with("scriptbox.db.damaged-")),
            "{names:?}"
        );
    }
}
