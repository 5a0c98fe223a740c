//! The audit log: who was refused, what was loaded, stored, installed or changed, by which
//! tenant on which node. Never keys, never request bodies. Entries are written in batches
//! by one task per node ([`AuditLog`]), through a bounded queue, so a flood of refused
//! requests cannot hold up the requests themselves; an entry that finds the queue full is
//! dropped, counted and logged (the tracing event under `scriptbox::audit` is always there).
//! The table keeps the newest [`AUDIT_KEEP`] entries.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Row as _;
use tokio::sync::mpsc;

use super::Store;

/// Entries kept in the table; older ones are pruned as new ones arrive.
pub const AUDIT_KEEP: i64 = 100_000;
/// Entries waiting to be written, at most (past it they are dropped and counted).
const QUEUE: usize = 4096;
/// Entries written in one transaction, at most.
const BATCH: usize = 256;
/// The table is pruned after this many entries were written.
const PRUNE_EVERY: u64 = 1000;

/// One event, as it is recorded. `detail` is a JSON object (no free text from a request
/// beyond names the server already checked).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at: f64,
    /// The tenant the event is about ("" before a key was accepted).
    pub tenant: String,
    pub event: String,
    pub detail: String,
}

/// An entry as read back, with its node and its place in the log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub seq: i64,
    pub node: String,
    pub entry: AuditEntry,
}

impl Store {
    /// Writes `entries` in one transaction.
    pub async fn record_audit(&self, entries: &[AuditEntry]) -> super::Result<()> {
        let mut tx = self.write().begin().await?;
        for entry in entries {
            sqlx::query(
                "INSERT INTO audit (at, node, tenant, event, detail) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(entry.at)
            .bind(self.node())
            .bind(&entry.tenant)
            .bind(&entry.event)
            .bind(&entry.detail)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` entries, newest first, older than `before` (a `seq`) when given, of one
    /// tenant when given.
    pub async fn audit_entries(
        &self,
        tenant: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> super::Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT seq, at, node, tenant, event, detail FROM audit
             WHERE ($1 = '' OR tenant = $1) AND seq < $2
             ORDER BY seq DESC LIMIT $3",
        )
        .bind(tenant.unwrap_or(""))
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(self.read())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(AuditRecord {
                    seq: row.try_get("seq")?,
                    node: row.try_get("node")?,
                    entry: AuditEntry {
                        at: row.try_get("at")?,
                        tenant: row.try_get("tenant")?,
                        event: row.try_get("event")?,
                        detail: row.try_get("detail")?,
                    },
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Deletes all but the newest `keep` entries.
    pub async fn prune_audit(&self, keep: i64) -> super::Result<()> {
        sqlx::query(
            "DELETE FROM audit WHERE seq <= (SELECT CAST(COALESCE(MAX(seq), 0) AS BIGINT) FROM audit) - $1",
        )
        .bind(keep)
        .execute(self.write())
        .await?;
        Ok(())
    }
}

/// The node's writer of audit entries. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<AuditEntry>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl AuditLog {
    /// Starts the writer (a task that ends when every clone is dropped).
    pub fn start(store: Store) -> Self {
        let (queue, mut entries) = mpsc::channel::<AuditEntry>(QUEUE);
        tokio::spawn(async move {
            let mut written = 0u64;
            let mut batch = Vec::with_capacity(BATCH);
            while entries.recv_many(&mut batch, BATCH).await > 0 {
                if let Err(err) = store.record_audit(&batch).await {
                    tracing::error!(%err, entries = batch.len(), "audit entries not stored");
                }
                let before = written / PRUNE_EVERY;
                written += batch.len() as u64;
                if written / PRUNE_EVERY != before
                    && let Err(err) = store.prune_audit(AUDIT_KEEP).await
                {
                    tracing::warn!(%err, "the audit log was not pruned");
                }
                batch.clear();
            }
        });
        Self {
            queue,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues `entry`; drops it (counted, logged) when the queue is full.
    pub fn record(&self, entry: AuditEntry) {
        if self.queue.try_send(entry).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "audit queue full: entries dropped");
            }
        }
    }

    /// Entries dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
