//! The schema's history: one numbered list of migrations, each written for both backends
//! (`migrations/NNNN_name.{sqlite,postgres}.sql`). A migration runs once, in one transaction
//! with the row that records it, so a crash leaves it applied or not at all. On PostgreSQL a
//! transaction-scoped advisory lock serialises nodes that start together.
//!
//! (sqlx has a migrator, but it reads one folder of SQL per database; here one list carries
//! both dialects, so the two backends cannot have different histories.)

use sqlx::Acquire as _;

use super::{Backend, Store};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "tasks",
        sqlite: include_str!("migrations/0001_tasks.sqlite.sql"),
        postgres: include_str!("migrations/0001_tasks.postgres.sql"),
    },
    Migration {
        version: 2,
        name: "control plane",
        sqlite: include_str!("migrations/0002_control_plane.sqlite.sql"),
        postgres: include_str!("migrations/0002_control_plane.postgres.sql"),
    },
    Migration {
        version: 3,
        name: "cluster",
        sqlite: include_str!("migrations/0003_cluster.sqlite.sql"),
        postgres: include_str!("migrations/0003_cluster.postgres.sql"),
    },
];

/// An arbitrary key for the migrations' advisory lock.
const MIGRATION_LOCK: i64 = 0x5c21_97b0;

const SCHEMA_TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS scriptbox_schema (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)";
const SCHEMA_TABLE_POSTGRES: &str = "CREATE TABLE IF NOT EXISTS scriptbox_schema (
    version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)";

/// Applies every migration the store has not had yet, in order.
pub(super) async fn run(store: &Store) -> Result<(), sqlx::Error> {
    let backend = store.backend();
    let mut conn = store.write().acquire().await?;
    for migration in MIGRATIONS {
        let mut tx = conn.begin().await?;
        if backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        let table = match backend {
            Backend::Sqlite => SCHEMA_TABLE_SQLITE,
            Backend::Postgres => SCHEMA_TABLE_POSTGRES,
        };
        sqlx::raw_sql(table).execute(&mut *tx).await?;
        let applied: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM scriptbox_schema WHERE version = $1")
                .bind(migration.version)
                .fetch_optional(&mut *tx)
                .await?;
        if applied.is_some() {
            tx.commit().await?;
            continue;
        }
        let sql = match backend {
            Backend::Sqlite => migration.sqlite,
            Backend::Postgres => migration.postgres,
        };
        sqlx::raw_sql(sql).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO scriptbox_schema (version, name, applied_at) VALUES ($1, $2, $3)")
            .bind(migration.version)
            .bind(migration.name)
            .bind(super::now())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "store migrated"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one() {
        for (i, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(migration.version, i as i64 + 1, "{}", migration.name);
        }
    }
}
