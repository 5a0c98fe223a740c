//! Tenants' scripts: immutable versions, each named by the SHA-256 of its content, kept
//! with their content. An upload and its quota checks and pruning are one transaction, so
//! two uploads at once cannot both pass a quota that only one of them fits.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, big, count, now};

/// One version's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionMeta {
    pub version: String,
    /// `module` (one `.py` file) or `package` (a zip).
    pub kind: String,
    pub size: u64,
    pub created_at: f64,
}

/// One script of an owner: its latest version and how many it keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptSummary {
    pub name: String,
    pub latest: VersionMeta,
    pub versions: u64,
    /// Bytes of all its versions.
    pub bytes: u64,
}

/// An owner's script quotas, checked inside the upload's transaction.
#[derive(Debug, Clone, Copy)]
pub struct ScriptQuotas {
    pub max_scripts: u64,
    pub max_total_bytes: u64,
    pub max_versions: u64,
}

/// Which quota an upload would pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptQuota {
    Scripts(u64),
    TotalBytes(u64),
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq)]
pub enum Put {
    /// A new version, now the latest; older ones past the quota were pruned.
    Created(VersionMeta),
    /// The content was already the latest version.
    Unchanged(VersionMeta),
    /// The content was an older version: it is the latest again.
    Restored(VersionMeta),
    Refused(ScriptQuota),
}

/// A new version to store.
pub struct NewVersion<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    pub content: &'a [u8],
}

fn meta(row: &AnyRow) -> Result<VersionMeta, sqlx::Error> {
    Ok(VersionMeta {
        version: row.try_get("version")?,
        kind: row.try_get("kind")?,
        size: count(row.try_get("size")?),
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Stores `new` as the latest version of the owner's script, within `quotas`; versions
    /// past `max_versions` are pruned, oldest first, unless a recorded tool runs them.
    pub async fn put_script(
        &self,
        owner: &str,
        new: &NewVersion<'_>,
        quotas: ScriptQuotas,
    ) -> super::Result<Put> {
        let mut tx = self.write().begin().await?;
        let versions = sqlx::query(
            "SELECT version, kind, size, created_at, seq FROM script_versions
             WHERE owner = $1 AND name = $2 ORDER BY seq DESC",
        )
        .bind(owner)
        .bind(new.name)
        .fetch_all(&mut *tx)
        .await?;
        let next_seq = match versions.first() {
            Some(row) => row.try_get::<i64, _>("seq")? + 1,
            None => 1,
        };
        if let Some(row) = versions.first()
            && row.try_get::<String, _>("version")? == new.version
        {
            tx.commit().await?;
            return Ok(Put::Unchanged(meta(row)?));
        }
        if let Some(row) = versions.iter().find(|row| {
            row.try_get::<String, _>("version")
                .is_ok_and(|v| v == new.version)
        }) {
            let found = meta(row)?;
            sqlx::query(
                "UPDATE script_versions SET seq = $4 WHERE owner = $1 AND name = $2
                 AND version = $3",
            )
            .bind(owner)
            .bind(new.name)
            .bind(new.version)
            .bind(next_seq)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Put::Restored(found));
        }
        if versions.is_empty() {
            let (scripts,): (i64,) =
                sqlx::query_as("SELECT COUNT(DISTINCT name) FROM script_versions WHERE owner = $1")
                    .bind(owner)
                    .fetch_one(&mut *tx)
                    .await?;
            if count(scripts) >= quotas.max_scripts {
                return Ok(Put::Refused(ScriptQuota::Scripts(quotas.max_scripts)));
            }
        }
        // The oldest versions past the quota (counting the new one), unless a tool runs them.
        let in_use: Vec<(String,)> = sqlx::query_as(
            "SELECT version FROM tools WHERE owner = $1 AND script_name = $2
             AND source = 'tenant'",
        )
        .bind(owner)
        .bind(new.name)
        .fetch_all(&mut *tx)
        .await?;
        let keep_old = usize::try_from(quotas.max_versions.saturating_sub(1)).unwrap_or(0);
        let mut pruned = Vec::new();
        let mut pruned_bytes = 0;
        for row in versions.iter().skip(keep_old) {
            let old = meta(row)?;
            if !in_use.iter().any(|(v,)| *v == old.version) {
                pruned_bytes += old.size;
                pruned.push(old.version);
            }
        }
        let (total,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM script_versions
             WHERE owner = $1",
        )
        .bind(owner)
        .fetch_one(&mut *tx)
        .await?;
        let size = new.content.len() as u64;
        if count(total).saturating_sub(pruned_bytes) + size > quotas.max_total_bytes {
            return Ok(Put::Refused(ScriptQuota::TotalBytes(
                quotas.max_total_bytes,
            )));
        }
        let created = VersionMeta {
            version: new.version.to_owned(),
            kind: new.kind.to_owned(),
            size,
            created_at: now(),
        };
        sqlx::query(
            "INSERT INTO script_versions (owner, name, version, kind, size, seq, created_at,
                                          content)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(owner)
        .bind(new.name)
        .bind(new.version)
        .bind(new.kind)
        .bind(big(size))
        .bind(next_seq)
        .bind(created.created_at)
        .bind(new.content.to_vec())
        .execute(&mut *tx)
        .await?;
        for version in &pruned {
            sqlx::query(
                "DELETE FROM script_versions WHERE owner = $1 AND name = $2 AND version = $3",
            )
            .bind(owner)
            .bind(new.name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Put::Created(created))
    }

    /// The owner's scripts, by name.
    pub async fn scripts(&self, owner: &str) -> super::Result<Vec<ScriptSummary>> {
        let rows = sqlx::query(
            "SELECT name, version, kind, size, created_at FROM script_versions
             WHERE owner = $1 ORDER BY name, seq DESC",
        )
        .bind(owner)
        .fetch_all(self.read())
        .await?;
        let mut scripts: Vec<ScriptSummary> = Vec::new();
        for row in &rows {
            let name: String = row.try_get("name")?;
            let version = meta(row)?;
            match scripts.last_mut() {
                Some(last) if last.name == name => {
                    last.versions += 1;
                    last.bytes += version.size;
                }
                _ => scripts.push(ScriptSummary {
                    name,
                    bytes: version.size,
                    latest: version,
                    versions: 1,
                }),
            }
        }
        Ok(scripts)
    }

    /// The versions of the owner's script `name`, newest first (empty: no such script).
    pub async fn script_versions(
        &self,
        owner: &str,
        name: &str,
    ) -> super::Result<Vec<VersionMeta>> {
        let rows = sqlx::query(
            "SELECT version, kind, size, created_at FROM script_versions
             WHERE owner = $1 AND name = $2 ORDER BY seq DESC",
        )
        .bind(owner)
        .bind(name)
        .fetch_all(self.read())
        .await?;
        Ok(rows.iter().map(meta).collect::<Result<_, _>>()?)
    }

    /// One version's metadata (the latest without `version`).
    pub async fn script_version(
        &self,
        owner: &str,
        name: &str,
        version: Option<&str>,
    ) -> super::Result<Option<VersionMeta>> {
        let row = sqlx::query(
            "SELECT version, kind, size, created_at FROM script_versions
             WHERE owner = $1 AND name = $2 AND ($3 IS NULL OR version = $3)
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(owner)
        .bind(name)
        .bind(version)
        .fetch_optional(self.read())
        .await?;
        Ok(row.as_ref().map(meta).transpose()?)
    }

    /// One version's content.
    pub async fn script_content(
        &self,
        owner: &str,
        name: &str,
        version: &str,
    ) -> super::Result<Option<Vec<u8>>> {
        let row: Option<(Vec<u8>,)> = sqlx::query_as(
            "SELECT content FROM script_versions WHERE owner = $1 AND name = $2
             AND version = $3",
        )
        .bind(owner)
        .bind(name)
        .bind(version)
        .fetch_optional(self.read())
        .await?;
        Ok(row.map(|(content,)| content))
    }

    /// Deletes every version of the owner's script; whether it existed.
    pub async fn delete_script(&self, owner: &str, name: &str) -> super::Result<bool> {
        let done = sqlx::query("DELETE FROM script_versions WHERE owner = $1 AND name = $2")
            .bind(owner)
            .bind(name)
            .execute(self.write())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
