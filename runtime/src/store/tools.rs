//! Each owner's desired registry state: the tools it has loaded (alias, script and version,
//! mode, limits, tracing) and its settings (sys paths, the active environment, the cache,
//! error strategies, tracing of tools loaded later). The server re-establishes both at start.
//! Values are the callers' JSON text; the store does not read them.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::Store;
use super::cluster::{Kind, note};

/// One loaded tool as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRecord {
    pub alias: String,
    pub script_name: String,
    /// `tenant` (the owner's own script) or `shared` (the operator's scripts folder).
    pub source: String,
    /// The script version it runs (for a shared script, the content's hash at load).
    pub version: String,
    pub mode: String,
    /// JSON: the tool's limits.
    pub limits: String,
    /// JSON: its tracing settings.
    pub debug: String,
    pub loaded_at: f64,
}

fn tool(row: &AnyRow) -> Result<ToolRecord, sqlx::Error> {
    Ok(ToolRecord {
        alias: row.try_get("alias")?,
        script_name: row.try_get("script_name")?,
        source: row.try_get("source")?,
        version: row.try_get("version")?,
        mode: row.try_get("mode")?,
        limits: row.try_get("limits")?,
        debug: row.try_get("debug")?,
        loaded_at: row.try_get("loaded_at")?,
    })
}

impl Store {
    /// Records a loaded tool (a new load, or a reload that moved it to another version).
    pub async fn put_tool(&self, owner: &str, record: &ToolRecord) -> super::Result<()> {
        let mut tx = self.write().begin().await?;
        upsert(&mut tx, owner, record).await?;
        note(&mut tx, owner, Kind::Tools).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a newly loaded tool if the owner has fewer than `max_tools` other recorded
    /// tools, on every node together: whether it did. The count and the insert are one
    /// transaction, under a lock on the owner (PostgreSQL) or the one writer (SQLite), so
    /// two nodes loading at once cannot both pass the quota.
    pub async fn put_new_tool(
        &self,
        owner: &str,
        record: &ToolRecord,
        max_tools: usize,
    ) -> super::Result<bool> {
        let mut tx = self.write().begin().await?;
        if self.backend() == super::Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(owner)
                .execute(&mut *tx)
                .await?;
        }
        let (others,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM tools WHERE owner = $1 AND alias <> $2")
                .bind(owner)
                .bind(&record.alias)
                .fetch_one(&mut *tx)
                .await?;
        if super::count(others) >= max_tools as u64 {
            return Ok(false);
        }
        upsert(&mut tx, owner, record).await?;
        note(&mut tx, owner, Kind::Tools).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A tool's new tracing settings; whether it is recorded.
    pub async fn set_tool_debug(
        &self,
        owner: &str,
        alias: &str,
        debug: &str,
    ) -> super::Result<bool> {
        let mut tx = self.write().begin().await?;
        let done = sqlx::query("UPDATE tools SET debug = $3 WHERE owner = $1 AND alias = $2")
            .bind(owner)
            .bind(alias)
            .bind(debug)
            .execute(&mut *tx)
            .await?;
        note(&mut tx, owner, Kind::Tools).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets an unloaded tool; whether it was recorded.
    pub async fn delete_tool(&self, owner: &str, alias: &str) -> super::Result<bool> {
        let mut tx = self.write().begin().await?;
        let done = sqlx::query("DELETE FROM tools WHERE owner = $1 AND alias = $2")
            .bind(owner)
            .bind(alias)
            .execute(&mut *tx)
            .await?;
        note(&mut tx, owner, Kind::Tools).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// The owner's recorded tools, by alias.
    pub async fn tools(&self, owner: &str) -> super::Result<Vec<ToolRecord>> {
        let rows = sqlx::query(
            "SELECT alias, script_name, source, version, mode, limits, debug, loaded_at
             FROM tools WHERE owner = $1 ORDER BY alias",
        )
        .bind(owner)
        .fetch_all(self.read())
        .await?;
        Ok(rows.iter().map(tool).collect::<Result<_, _>>()?)
    }

    /// The aliases of the owner's tools that run its script `name` (any version).
    pub async fn tools_using(&self, owner: &str, name: &str) -> super::Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT alias FROM tools WHERE owner = $1 AND script_name = $2 AND source = 'tenant'
             ORDER BY alias",
        )
        .bind(owner)
        .bind(name)
        .fetch_all(self.read())
        .await?;
        Ok(rows.into_iter().map(|(alias,)| alias).collect())
    }

    /// Sets one of the owner's settings (JSON text).
    pub async fn put_setting(&self, owner: &str, key: &str, value: &str) -> super::Result<()> {
        let mut tx = self.write().begin().await?;
        sqlx::query(
            "INSERT INTO owner_settings (owner, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (owner, key) DO UPDATE SET value = excluded.value",
        )
        .bind(owner)
        .bind(key)
        .bind(value)
        .execute(&mut *tx)
        .await?;
        note(&mut tx, owner, Kind::Tools).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes one of the owner's settings.
    pub async fn delete_setting(&self, owner: &str, key: &str) -> super::Result<()> {
        let mut tx = self.write().begin().await?;
        sqlx::query("DELETE FROM owner_settings WHERE owner = $1 AND key = $2")
            .bind(owner)
            .bind(key)
            .execute(&mut *tx)
            .await?;
        note(&mut tx, owner, Kind::Tools).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The owner's settings, by key.
    pub async fn settings(&self, owner: &str) -> super::Result<Vec<(String, String)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT key, value FROM owner_settings WHERE owner = $1 ORDER BY key")
                .bind(owner)
                .fetch_all(self.read())
                .await?;
        Ok(rows)
    }
}

async fn upsert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    owner: &str,
    record: &ToolRecord,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO tools (owner, alias, script_name, source, version, mode, limits, debug,
                            loaded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (owner, alias) DO UPDATE SET script_name = excluded.script_name,
             source = excluded.source, version = excluded.version, mode = excluded.mode,
             limits = excluded.limits, debug = excluded.debug,
             loaded_at = excluded.loaded_at",
    )
    .bind(owner)
    .bind(&record.alias)
    .bind(&record.script_name)
    .bind(&record.source)
    .bind(&record.version)
    .bind(&record.mode)
    .bind(&record.limits)
    .bind(&record.debug)
    .bind(record.loaded_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
