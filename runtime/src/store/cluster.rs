//! Several nodes on one store: each node's heartbeat, and the log of changes the nodes
//! follow to stay in step (a change is written in the same transaction as what it
//! announces, so a node never sees one without the other).

use sqlx::Row as _;

use super::{Store, now};

/// What changed, for the nodes that follow the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An owner's recorded tools or settings.
    Tools,
    /// Tenants made through the API, or their keys.
    Tenants,
    /// An owner's installed packages.
    Packages,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Tenants => "tenants",
            Self::Packages => "packages",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "tools" => Some(Self::Tools),
            "tenants" => Some(Self::Tenants),
            "packages" => Some(Self::Packages),
            _ => None,
        }
    }
}

/// One change of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub owner: String,
    pub kind: Kind,
}

/// Records, inside `tx`, that `owner`'s `kind` changed.
pub(super) async fn note(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    owner: &str,
    kind: Kind,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO changes (owner, kind, at) VALUES ($1, $2, $3)")
        .bind(owner)
        .bind(kind.as_str())
        .bind(now())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Store {
    /// The newest change's number (0 for none).
    pub async fn last_change(&self) -> super::Result<i64> {
        let (seq,): (i64,) =
            sqlx::query_as("SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM changes")
                .fetch_one(self.read())
                .await?;
        Ok(seq)
    }

    /// Changes numbered above `after`, oldest first, at most `limit`.
    pub async fn changes_since(&self, after: i64, limit: i64) -> super::Result<Vec<Change>> {
        let rows = sqlx::query(
            "SELECT seq, owner, kind FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(self.read())
        .await?;
        let mut changes = Vec::with_capacity(rows.len());
        for row in &rows {
            let kind: String = row.try_get("kind")?;
            if let Some(kind) = Kind::parse(&kind) {
                changes.push(Change {
                    seq: row.try_get("seq")?,
                    owner: row.try_get("owner")?,
                    kind,
                });
            }
        }
        Ok(changes)
    }

    /// Forgets changes older than `before` (every node has followed them long since).
    pub async fn prune_changes(&self, before: f64) -> super::Result<()> {
        sqlx::query("DELETE FROM changes WHERE at < $1")
            .bind(before)
            .execute(self.write())
            .await?;
        Ok(())
    }

    /// This node is alive now.
    pub async fn heartbeat(&self, node: &str, started_at: f64) -> super::Result<()> {
        sqlx::query(
            "INSERT INTO nodes (id, started_at, last_seen) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at,
                 last_seen = excluded.last_seen",
        )
        .bind(node)
        .bind(started_at)
        .bind(now())
        .execute(self.write())
        .await?;
        Ok(())
    }

    /// The nodes seen since `since`, by id.
    pub async fn live_nodes(&self, since: f64) -> super::Result<Vec<String>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT id FROM nodes WHERE last_seen >= $1 ORDER BY id")
                .bind(since)
                .fetch_all(self.read())
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}
