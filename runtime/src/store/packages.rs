//! Tenants' installed packages and the wheels they came from, so that every node can
//! install what a tenant installed through any one of them. Wheels are kept by the SHA-256
//! of their content, once however many owners use them, and deleted when no installed
//! package refers to them. A removed package stays as a row marked removed, so that the
//! nodes that still have it remove it too.

use sqlx::Row as _;

use super::cluster::{Kind, note};
use super::{Store, big, count, now};

/// One package of an owner's environment, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRecord {
    pub env: String,
    /// The normalised distribution name.
    pub name: String,
    pub version: String,
    /// The SHA-256 of the wheel it was installed from.
    pub sha256: String,
    /// Bytes it occupies once unpacked (what counts against the quota).
    pub bytes: u64,
    /// Removed since: every node removes it.
    pub removed: bool,
}

/// A wheel's content.
#[derive(Debug, Clone)]
pub struct Wheel {
    pub sha256: String,
    /// The file name pip gave it (`name-version-tags.whl`).
    pub file: String,
    pub content: Vec<u8>,
}

/// Wheels no installed package refers to.
pub(super) const UNUSED_WHEELS: &str =
    "DELETE FROM wheels WHERE sha256 NOT IN (SELECT sha256 FROM packages WHERE removed = 0)";

impl Store {
    /// Records packages installed into `owner`'s environment with the wheels they came
    /// from, as one transaction.
    pub async fn record_install(
        &self,
        owner: &str,
        packages: &[PackageRecord],
        wheels: &[Wheel],
    ) -> super::Result<()> {
        let mut tx = self.write().begin().await?;
        for wheel in wheels {
            sqlx::query(
                "INSERT INTO wheels (sha256, file, size, content) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(&wheel.sha256)
            .bind(&wheel.file)
            .bind(big(wheel.content.len() as u64))
            .bind(&wheel.content)
            .execute(&mut *tx)
            .await?;
        }
        for package in packages {
            sqlx::query(
                "INSERT INTO packages (owner, env, name, version, sha256, bytes, removed, \
                 installed_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7) \
                 ON CONFLICT (owner, env, name) DO UPDATE SET version = excluded.version, \
                 sha256 = excluded.sha256, bytes = excluded.bytes, removed = 0, \
                 installed_at = excluded.installed_at",
            )
            .bind(owner)
            .bind(&package.env)
            .bind(&package.name)
            .bind(&package.version)
            .bind(&package.sha256)
            .bind(big(package.bytes))
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        finish(tx, owner).await
    }

    /// Records that package `name` was removed from `owner`'s environment `env`.
    pub async fn record_uninstall(&self, owner: &str, env: &str, name: &str) -> super::Result<()> {
        let mut tx = self.write().begin().await?;
        sqlx::query(
            "UPDATE packages SET removed = 1, installed_at = $4 \
             WHERE owner = $1 AND env = $2 AND name = $3",
        )
        .bind(owner)
        .bind(env)
        .bind(name)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        finish(tx, owner).await
    }

    /// Every package row of `owner`, removed ones included, by environment and name.
    pub async fn package_records(&self, owner: &str) -> super::Result<Vec<PackageRecord>> {
        let rows = sqlx::query(
            "SELECT env, name, version, sha256, bytes, removed FROM packages \
             WHERE owner = $1 ORDER BY env, name",
        )
        .bind(owner)
        .fetch_all(self.read())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(PackageRecord {
                    env: row.try_get("env")?,
                    name: row.try_get("name")?,
                    version: row.try_get("version")?,
                    sha256: row.try_get("sha256")?,
                    bytes: count(row.try_get("bytes")?),
                    removed: row.try_get::<i64, _>("removed")? != 0,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Bytes of `owner`'s installed packages in environments other than `env`, as recorded
    /// by every node.
    pub async fn packages_bytes_except(&self, owner: &str, env: &str) -> super::Result<u64> {
        let (bytes,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM packages \
             WHERE owner = $1 AND env <> $2 AND removed = 0",
        )
        .bind(owner)
        .bind(env)
        .fetch_one(self.read())
        .await?;
        Ok(count(bytes))
    }

    /// A stored wheel by its SHA-256.
    pub async fn wheel(&self, sha256: &str) -> super::Result<Option<Wheel>> {
        let row = sqlx::query("SELECT sha256, file, content FROM wheels WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(self.read())
            .await?;
        row.map(|row| {
            Ok(Wheel {
                sha256: row.try_get("sha256")?,
                file: row.try_get("file")?,
                content: row.try_get("content")?,
            })
        })
        .transpose()
        .map_err(|err: sqlx::Error| err.into())
    }
}

/// Ends a change of `owner`'s packages: drops the wheels nothing uses any more, notes the
/// change for the other nodes, commits.
async fn finish(mut tx: sqlx::Transaction<'_, sqlx::Any>, owner: &str) -> super::Result<()> {
    sqlx::query(UNUSED_WHEELS).execute(&mut *tx).await?;
    note(&mut tx, owner, Kind::Packages).await?;
    tx.commit().await?;
    Ok(())
}
