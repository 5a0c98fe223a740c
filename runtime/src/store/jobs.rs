//! `callAsync` jobs: each recorded when it is accepted and when it ends, so a restart can
//! say what became of it (`interrupted` for one that was running) until it expires.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::Store;

/// A job as recorded. `result` and `error` are the JSON the client reads.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub alias: String,
    pub function_name: String,
    pub status: String,
    pub created_at: f64,
    pub finished_at: Option<f64>,
    pub result: Option<String>,
    pub error: Option<String>,
}

fn job(row: &AnyRow) -> Result<JobRecord, sqlx::Error> {
    Ok(JobRecord {
        id: row.try_get("id")?,
        alias: row.try_get("alias")?,
        function_name: row.try_get("function_name")?,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        result: row.try_get("result")?,
        error: row.try_get("error")?,
    })
}

impl Store {
    /// Records a job as accepted (its status, `running`, is in `record`).
    pub async fn insert_job(&self, owner: &str, record: &JobRecord) -> super::Result<()> {
        sqlx::query(
            "INSERT INTO jobs (id, owner, alias, function_name, status, created_at, node)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&record.id)
        .bind(owner)
        .bind(&record.alias)
        .bind(&record.function_name)
        .bind(&record.status)
        .bind(record.created_at)
        .bind(self.node())
        .execute(self.write())
        .await?;
        Ok(())
    }

    /// Records how a running job ended (a job no longer running is left as it is).
    pub async fn finish_job(&self, record: &JobRecord) -> super::Result<()> {
        sqlx::query(
            "UPDATE jobs SET status = $2, finished_at = $3, result = $4, error = $5
             WHERE id = $1 AND status = 'running'",
        )
        .bind(&record.id)
        .bind(&record.status)
        .bind(record.finished_at)
        .bind(&record.result)
        .bind(&record.error)
        .execute(self.write())
        .await?;
        Ok(())
    }

    /// Forgets one of the owner's jobs.
    pub async fn delete_job(&self, owner: &str, id: &str) -> super::Result<()> {
        sqlx::query("DELETE FROM jobs WHERE owner = $1 AND id = $2")
            .bind(owner)
            .bind(id)
            .execute(self.write())
            .await?;
        Ok(())
    }

    /// Marks `interrupted` every job still `running` whose node is gone: this node's own
    /// (a previous process of it, at start) and those of nodes not seen since `alive_since`;
    /// how many.
    pub async fn interrupt_jobs(&self, at: f64, alive_since: f64) -> super::Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs SET status = 'interrupted', finished_at = $1 WHERE status = 'running'
             AND (node IS NULL OR node = $2
                  OR node NOT IN (SELECT id FROM nodes WHERE last_seen >= $3 AND id <> $2))",
        )
        .bind(at)
        .bind(self.node())
        .bind(alive_since)
        .execute(self.write())
        .await?;
        Ok(done.rows_affected())
    }

    /// One of the owner's jobs.
    pub async fn job(&self, owner: &str, id: &str) -> super::Result<Option<JobRecord>> {
        let row = sqlx::query(
            "SELECT id, alias, function_name, status, created_at, finished_at, result, error
             FROM jobs WHERE owner = $1 AND id = $2",
        )
        .bind(owner)
        .bind(id)
        .fetch_optional(self.read())
        .await?;
        Ok(row.as_ref().map(job).transpose()?)
    }

    /// Forgets every job that finished before `before`.
    pub async fn expire_jobs(&self, owner: &str, before: f64) -> super::Result<()> {
        sqlx::query("DELETE FROM jobs WHERE owner = $1 AND finished_at < $2")
            .bind(owner)
            .bind(before)
            .execute(self.write())
            .await?;
        Ok(())
    }

    /// The owner's recorded jobs, oldest first.
    pub async fn jobs(&self, owner: &str) -> super::Result<Vec<JobRecord>> {
        let rows = sqlx::query(
            "SELECT id, alias, function_name, status, created_at, finished_at, result, error
             FROM jobs WHERE owner = $1 ORDER BY created_at",
        )
        .bind(owner)
        .fetch_all(self.read())
        .await?;
        Ok(rows.iter().map(job).collect::<Result<_, _>>()?)
    }
}
