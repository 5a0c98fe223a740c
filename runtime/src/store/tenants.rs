//! Tenants created through the API (those of the config file are not stored) and the
//! SHA-256 digests of their keys; and the removal of everything an owner has stored.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::Store;
use super::cluster::{Kind, note};

/// A tenant as recorded. `spec` is the caller's JSON (quotas, limits, policy).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    pub id: String,
    pub role: String,
    pub spec: String,
    pub created_at: f64,
}

/// A key's digest.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub tenant: String,
    /// Hex SHA-256 of the key; the key itself is never stored.
    pub sha256: String,
    pub created_at: f64,
}

fn tenant(row: &AnyRow) -> Result<TenantRecord, sqlx::Error> {
    Ok(TenantRecord {
        id: row.try_get("id")?,
        role: row.try_get("role")?,
        spec: row.try_get("spec")?,
        created_at: row.try_get("created_at")?,
    })
}

fn key(row: &AnyRow) -> Result<KeyRecord, sqlx::Error> {
    Ok(KeyRecord {
        id: row.try_get("id")?,
        tenant: row.try_get("tenant")?,
        sha256: row.try_get("sha256")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Every table whose rows belong to an owner, with the column that names it.
/// (The audit log is kept: it is the record of what the tenant did.)
const OWNED: [(&str, &str); 7] = [
    ("DELETE FROM packages WHERE owner = $1", "packages"),
    ("DELETE FROM tools WHERE owner = $1", "tools"),
    ("DELETE FROM owner_settings WHERE owner = $1", "settings"),
    ("DELETE FROM script_versions WHERE owner = $1", "scripts"),
    ("DELETE FROM jobs WHERE owner = $1", "jobs"),
    (
        "DELETE FROM history WHERE task_id IN (SELECT id FROM tasks WHERE owner = $1)",
        "task history",
    ),
    (
        "DELETE FROM steps WHERE task_id IN (SELECT id FROM tasks WHERE owner = $1)",
        "task steps",
    ),
];

impl Store {
    /// Records a new tenant with its first key, in one transaction; `false` (nothing
    /// written) when a tenant of that id is recorded already.
    pub async fn insert_tenant(
        &self,
        record: &TenantRecord,
        first: &KeyRecord,
    ) -> super::Result<bool> {
        let mut tx = self.write().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, role, spec, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&record.id)
        .bind(&record.role)
        .bind(&record.spec)
        .bind(record.created_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
        insert_key(&mut tx, first).await?;
        note(&mut tx, &record.id, Kind::Tenants).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Every recorded tenant.
    pub async fn tenant_records(&self) -> super::Result<Vec<TenantRecord>> {
        let rows = sqlx::query("SELECT id, role, spec, created_at FROM tenants ORDER BY id")
            .fetch_all(self.read())
            .await?;
        Ok(rows.iter().map(tenant).collect::<Result<_, _>>()?)
    }

    /// Every recorded key digest.
    pub async fn key_records(&self) -> super::Result<Vec<KeyRecord>> {
        let rows = sqlx::query(
            "SELECT id, tenant, sha256, created_at FROM api_keys ORDER BY tenant, created_at",
        )
        .fetch_all(self.read())
        .await?;
        Ok(rows.iter().map(key).collect::<Result<_, _>>()?)
    }

    /// Adds a key to a recorded tenant; `false` when the tenant is not recorded.
    pub async fn add_key(&self, record: &KeyRecord) -> super::Result<bool> {
        let mut tx = self.write().begin().await?;
        let known: Option<(String,)> = sqlx::query_as("SELECT id FROM tenants WHERE id = $1")
            .bind(&record.tenant)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Ok(false);
        }
        insert_key(&mut tx, record).await?;
        note(&mut tx, &record.tenant, Kind::Tenants).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes one of a tenant's keys; whether it existed.
    pub async fn delete_key(&self, tenant: &str, key_id: &str) -> super::Result<bool> {
        let mut tx = self.write().begin().await?;
        let done = sqlx::query("DELETE FROM api_keys WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        note(&mut tx, tenant, Kind::Tenants).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a tenant, its keys and everything it owns (tools, settings, scripts, jobs,
    /// tasks), in one transaction; whether the tenant was recorded.
    pub async fn delete_tenant(&self, id: &str) -> super::Result<bool> {
        let mut tx = self.write().begin().await?;
        for (sql, _) in OWNED {
            sqlx::query(sql).bind(id).execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM tasks WHERE owner = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM api_keys WHERE tenant = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(super::packages::UNUSED_WHEELS)
            .execute(&mut *tx)
            .await?;
        note(&mut tx, id, Kind::Tenants).await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }
}

async fn insert_key(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    record: &KeyRecord,
) -> super::Result<()> {
    sqlx::query("INSERT INTO api_keys (id, tenant, sha256, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&record.id)
        .bind(&record.tenant)
        .bind(&record.sha256)
        .bind(record.created_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
