//! Durable task history: tasks, their steps and every state change.
//!
//! Every state change of a task or a step is one transaction: the current state in `tasks` /
//! `steps`, and a row in `history` with its time, attempt and result or error.
//!
//! A task is held by one node at a time, with a lease it renews; when the lease expires (the
//! node died) another node claims the task and takes it over ([`Store::claim_task`]).

use serde::Serialize;
use serde_json::value::RawValue;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::{Store, now};

/// Task states that are finished.
pub const FINISHED: [&str; 5] = [
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "interrupted",
];

/// A task as listed.
#[derive(Debug, Clone, Serialize)]
pub struct TaskSummary {
    pub task_id: String,
    pub name: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at: f64,
    pub updated_at: f64,
}

/// A step's current state.
#[derive(Debug, Clone, Serialize)]
pub struct StepState {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
}

/// One state change.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<String>,
    pub status: String,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The node that made the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// An unfinished task whose runner is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub id: String,
    pub owner: String,
}

/// A task with its steps and history.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    #[serde(flatten)]
    pub summary: TaskSummary,
    pub steps: Vec<StepState>,
    pub history: Vec<Change>,
    /// The task as submitted (for resuming).
    #[serde(skip)]
    pub spec: String,
}

fn raw(text: Option<String>) -> Option<Box<RawValue>> {
    text.and_then(|t| RawValue::from_string(t).ok())
}

fn summary(row: &AnyRow) -> Result<TaskSummary, sqlx::Error> {
    Ok(TaskSummary {
        task_id: row.try_get("id")?,
        name: row.try_get("name")?,
        status: row.try_get("status")?,
        error: row.try_get("error")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn attempt(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl Store {
    /// Tasks whose runner is gone: unfinished, and with no lease, an expired one, or one
    /// held by this node (a previous process of it), oldest first.
    pub async fn orphaned_tasks(&self, at: f64, limit: i64) -> super::Result<Vec<Orphan>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT id, owner FROM tasks WHERE status IN ('pending', 'running')
             AND (lease_until IS NULL OR lease_until < $1 OR node = $2)
             ORDER BY seq LIMIT $3",
        )
        .bind(at)
        .bind(self.node())
        .bind(limit)
        .fetch_all(self.read())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, owner)| Orphan { id, owner })
            .collect())
    }

    /// Claims task `id` for this node until `lease_until`, if no other node holds a live
    /// lease on it: whether this node has it now. (One statement: of two nodes claiming at
    /// once, one wins.)
    pub async fn claim_task(&self, id: &str, at: f64, lease_until: f64) -> super::Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET node = $2, lease_until = $3 WHERE id = $1
             AND status IN ('pending', 'running')
             AND (lease_until IS NULL OR lease_until < $4 OR node = $2)",
        )
        .bind(id)
        .bind(self.node())
        .bind(lease_until)
        .bind(at)
        .execute(self.write())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Renews the leases of every unfinished task this node holds.
    pub async fn renew_leases(&self, lease_until: f64) -> super::Result<u64> {
        let done = sqlx::query(
            "UPDATE tasks SET lease_until = $2 WHERE node = $1
             AND status IN ('pending', 'running')",
        )
        .bind(self.node())
        .bind(lease_until)
        .execute(self.write())
        .await?;
        Ok(done.rows_affected())
    }

    /// Asks the node running the owner's task to cancel it; whether it is unfinished.
    pub async fn request_cancel(&self, owner: &str, id: &str) -> super::Result<bool> {
        let done = sqlx::query(
            "UPDATE tasks SET cancel_requested = 1 WHERE id = $1 AND owner = $2
             AND status IN ('pending', 'running')",
        )
        .bind(id)
        .bind(owner)
        .execute(self.write())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The unfinished tasks this node holds that a client asked (through another node) to
    /// cancel.
    pub async fn cancel_requests(&self) -> super::Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM tasks WHERE node = $1 AND cancel_requested <> 0
             AND status IN ('pending', 'running')",
        )
        .bind(self.node())
        .fetch_all(self.read())
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The owner's unfinished tasks, on every node.
    pub async fn unfinished_tasks(&self, owner: &str) -> super::Result<usize> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM tasks WHERE owner = $1 AND status IN ('pending', 'running')",
        )
        .bind(owner)
        .fetch_one(self.read())
        .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Records a new task and its steps, all `pending`, held by this node until
    /// `lease_until`.
    pub async fn insert_task(
        &self,
        id: &str,
        owner: &str,
        name: &str,
        spec: &str,
        steps: &[(&str, &str)],
        lease_until: f64,
    ) -> super::Result<()> {
        let mut tx = self.write().begin().await?;
        let at = now();
        sqlx::query(
            "INSERT INTO tasks (id, owner, name, spec, status, created_at, updated_at, node,
                                lease_until)
             VALUES ($1, $2, $3, $4, 'pending', $5, $5, $6, $7)",
        )
        .bind(id)
        .bind(owner)
        .bind(name)
        .bind(spec)
        .bind(at)
        .bind(self.node())
        .bind(lease_until)
        .execute(&mut *tx)
        .await?;
        for (position, (step, kind)) in steps.iter().enumerate() {
            sqlx::query(
                "INSERT INTO steps (task_id, step_id, position, kind, status)
                 VALUES ($1, $2, $3, $4, 'pending')",
            )
            .bind(id)
            .bind(*step)
            .bind(position as i64)
            .bind(*kind)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO history (task_id, status, attempt, at, node)
             VALUES ($1, 'pending', 0, $2, $3)",
        )
        .bind(id)
        .bind(at)
        .bind(self.node())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A task's new state.
    pub async fn set_task(&self, id: &str, status: &str, error: Option<&str>) -> super::Result<()> {
        let mut tx = self.write().begin().await?;
        let at = now();
        sqlx::query("UPDATE tasks SET status = $2, error = $3, updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(status)
            .bind(error)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO history (task_id, status, attempt, at, error, node)
             VALUES ($1, $2, 0, $3, $4, $5)",
        )
        .bind(id)
        .bind(status)
        .bind(at)
        .bind(error)
        .bind(self.node())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A step's new state; `running` counts an attempt and sets its start.
    pub async fn set_step(
        &self,
        task: &str,
        step: &str,
        status: &str,
        attempt: u32,
        result: Option<&RawValue>,
        error: Option<&str>,
    ) -> super::Result<()> {
        let mut tx = self.write().begin().await?;
        let at = now();
        if status == "running" {
            sqlx::query(
                "UPDATE steps SET status = 'running', attempts = $3, started_at = $4,
                 finished_at = NULL, error = NULL WHERE task_id = $1 AND step_id = $2",
            )
            .bind(task)
            .bind(step)
            .bind(i64::from(attempt))
            .bind(at)
            .execute(&mut *tx)
            .await?;
        } else {
            sqlx::query(
                "UPDATE steps SET status = $3, result = $4, error = $5, finished_at = $6
                 WHERE task_id = $1 AND step_id = $2",
            )
            .bind(task)
            .bind(step)
            .bind(status)
            .bind(result.map(RawValue::get))
            .bind(error)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE tasks SET updated_at = $2 WHERE id = $1")
            .bind(task)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO history (task_id, step_id, status, attempt, at, error, node)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(task)
        .bind(step)
        .bind(status)
        .bind(i64::from(attempt))
        .bind(at)
        .bind(error)
        .bind(self.node())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The owner's task `id` with its steps and history.
    pub async fn task(&self, owner: &str, id: &str) -> super::Result<Option<TaskRecord>> {
        let mut conn = self.read().acquire().await?;
        let found = sqlx::query(
            "SELECT id, name, status, error, created_at, updated_at, spec FROM tasks
             WHERE id = $1 AND owner = $2",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(row) = found else {
            return Ok(None);
        };
        let (summary, spec) = (summary(&row)?, row.try_get::<String, _>("spec")?);
        let steps = sqlx::query(
            "SELECT step_id, kind, status, attempts, result, error, started_at, finished_at
             FROM steps WHERE task_id = $1 ORDER BY position",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            Ok(StepState {
                id: row.try_get("step_id")?,
                kind: row.try_get("kind")?,
                status: row.try_get("status")?,
                attempts: attempt(row.try_get("attempts")?),
                result: raw(row.try_get("result")?),
                error: row.try_get("error")?,
                started_at: row.try_get("started_at")?,
                finished_at: row.try_get("finished_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let history = sqlx::query(
            "SELECT at, step_id, status, attempt, error, node FROM history
             WHERE task_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            Ok(Change {
                at: row.try_get("at")?,
                step_id: row.try_get("step_id")?,
                status: row.try_get("status")?,
                attempt: attempt(row.try_get("attempt")?),
                error: row.try_get("error")?,
                node: row.try_get("node")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(Some(TaskRecord {
            summary,
            steps,
            history,
            spec,
        }))
    }

    /// The owner's tasks, newest first, `limit` at a time; `cursor` is the previous page's
    /// `next_cursor`. Returns the page and the cursor of the next one.
    pub async fn tasks(
        &self,
        owner: &str,
        status: Option<&str>,
        limit: usize,
        cursor: Option<i64>,
    ) -> super::Result<(Vec<TaskSummary>, Option<i64>)> {
        let rows = sqlx::query(
            "SELECT seq, id, name, status, error, created_at, updated_at FROM tasks
             WHERE owner = $1 AND ($2 IS NULL OR status = $2) AND seq < $3
             ORDER BY seq DESC LIMIT $4",
        )
        .bind(owner)
        .bind(status)
        .bind(cursor.unwrap_or(i64::MAX))
        .bind((limit + 1) as i64)
        .fetch_all(self.read())
        .await?;
        let mut page = rows
            .iter()
            .map(|row| Ok((row.try_get::<i64, _>("seq")?, summary(row)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let more = page.len() > limit;
        page.truncate(limit);
        let next = if more {
            page.last().map(|(seq, _)| *seq)
        } else {
            None
        };
        Ok((page.into_iter().map(|(_, t)| t).collect(), next))
    }

    /// How many tasks the owner has stored.
    pub async fn task_count(&self, owner: &str) -> super::Result<usize> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM tasks WHERE owner = $1")
            .bind(owner)
            .fetch_one(self.read())
            .await?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Every owner's tasks counted by status (for the metrics), by status.
    pub async fn task_states(&self) -> super::Result<Vec<(String, i64)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status")
                .fetch_all(self.read())
                .await?;
        Ok(rows)
    }

    /// The bytes of step results the owner's tasks hold.
    pub async fn task_result_bytes(&self, owner: &str) -> super::Result<u64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(LENGTH(s.result)), 0) AS BIGINT) FROM steps s
             JOIN tasks t ON s.task_id = t.id WHERE t.owner = $1",
        )
        .bind(owner)
        .fetch_one(self.read())
        .await?;
        Ok(super::count(n))
    }

    /// Deletes the owner's task and its history; whether it existed.
    pub async fn delete_task(&self, owner: &str, id: &str) -> super::Result<bool> {
        let mut tx = self.write().begin().await?;
        let n = sqlx::query("DELETE FROM tasks WHERE id = $1 AND owner = $2")
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            sqlx::query("DELETE FROM steps WHERE task_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM history WHERE task_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }
}
