//! Durable task history in SQLite (`<data_dir>/tasks.db`, WAL).
//!
//! Every state change of a task or a step is one transaction: the current state in `tasks` /
//! `steps`, and a row in `history` with its time, attempt and result or error. WAL with
//! `synchronous = NORMAL` does not sync on each commit: a crashed or killed process loses
//! nothing (the pages are the kernel's), a power loss may lose the last commits.
//!
//! At open, tasks that were pending or running belong to a process that is gone: they and
//! their steps in flight (running or waiting to retry) are marked `interrupted`; steps that
//! never started stay `pending` (see [`Store::recover`]).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::value::RawValue;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_owner ON tasks (owner, seq);
CREATE TABLE IF NOT EXISTS steps (
    task_id TEXT NOT NULL,
    step_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    started_at REAL,
    finished_at REAL,
    PRIMARY KEY (task_id, step_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    step_id TEXT,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS history_by_task ON history (task_id, seq);
";

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

/// Two connections: writes go through one, reads through the other, so (WAL) a large read
/// never holds up the runners' state changes.
pub struct Store {
    db: Mutex<Connection>,
    reader: Mutex<Connection>,
}

/// The current time in seconds since the epoch.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn raw(text: Option<String>) -> Option<Box<RawValue>> {
    text.and_then(|t| RawValue::from_string(t).ok())
}

impl Store {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let db = Connection::open(path)?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        let reader = Connection::open(path)?;
        reader.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self {
            db: Mutex::new(db),
            reader: Mutex::new(reader),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.reader.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks every task left pending or running (by a process that is gone) `interrupted`,
    /// with its unfinished steps. Returns how many tasks.
    pub fn recover(&self) -> super::Result<usize> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let at = now();
        let ids: Vec<String> = {
            let mut q =
                tx.prepare("SELECT id FROM tasks WHERE status IN ('pending', 'running')")?;
            q.query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        for id in &ids {
            tx.execute(
                "UPDATE tasks SET status = 'interrupted', updated_at = ?2 WHERE id = ?1",
                params![id, at],
            )?;
            tx.execute(
                "INSERT INTO history (task_id, step_id, status, attempt, at, error)
                 SELECT task_id, step_id, 'interrupted', attempts, ?2, NULL FROM steps
                 WHERE task_id = ?1 AND status IN ('running', 'retrying')",
                params![id, at],
            )?;
            tx.execute(
                "UPDATE steps SET status = 'interrupted', finished_at = ?2
                 WHERE task_id = ?1 AND status IN ('running', 'retrying')",
                params![id, at],
            )?;
            tx.execute(
                "INSERT INTO history (task_id, status, attempt, at, error)
                 VALUES (?1, 'interrupted', 0, ?2, 'the server stopped while the task ran')",
                params![id, at],
            )?;
        }
        tx.commit()?;
        Ok(ids.len())
    }

    /// Records a new task and its steps, all `pending`.
    pub fn insert(
        &self,
        id: &str,
        owner: &str,
        name: &str,
        spec: &str,
        steps: &[(&str, &str)],
    ) -> super::Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let at = now();
        tx.execute(
            "INSERT INTO tasks (id, owner, name, spec, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
            params![id, owner, name, spec, at],
        )?;
        for (position, (step, kind)) in steps.iter().enumerate() {
            tx.execute(
                "INSERT INTO steps (task_id, step_id, position, kind, status)
                 VALUES (?1, ?2, ?3, ?4, 'pending')",
                params![id, step, position as i64, kind],
            )?;
        }
        tx.execute(
            "INSERT INTO history (task_id, status, attempt, at) VALUES (?1, 'pending', 0, ?2)",
            params![id, at],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A task's new state.
    pub fn set_task(&self, id: &str, status: &str, error: Option<&str>) -> super::Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let at = now();
        tx.execute(
            "UPDATE tasks SET status = ?2, error = ?3, updated_at = ?4 WHERE id = ?1",
            params![id, status, error, at],
        )?;
        tx.execute(
            "INSERT INTO history (task_id, status, attempt, at, error) VALUES (?1, ?2, 0, ?3, ?4)",
            params![id, status, at, error],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A step's new state; `running` counts an attempt and sets its start.
    pub fn set_step(
        &self,
        task: &str,
        step: &str,
        status: &str,
        attempt: u32,
        result: Option<&RawValue>,
        error: Option<&str>,
    ) -> super::Result<()> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let at = now();
        if status == "running" {
            tx.execute(
                "UPDATE steps SET status = 'running', attempts = ?3, started_at = ?4,
                 finished_at = NULL, error = NULL WHERE task_id = ?1 AND step_id = ?2",
                params![task, step, attempt, at],
            )?;
        } else {
            tx.execute(
                "UPDATE steps SET status = ?3, result = ?4, error = ?5, finished_at = ?6
                 WHERE task_id = ?1 AND step_id = ?2",
                params![task, step, status, result.map(RawValue::get), error, at],
            )?;
        }
        tx.execute(
            "UPDATE tasks SET updated_at = ?2 WHERE id = ?1",
            params![task, at],
        )?;
        tx.execute(
            "INSERT INTO history (task_id, step_id, status, attempt, at, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![task, step, status, attempt, at, error],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The owner's task `id` with its steps and history.
    pub fn get(&self, owner: &str, id: &str) -> super::Result<Option<TaskRecord>> {
        let db = self.reader();
        let found = db
            .query_row(
                "SELECT id, name, status, error, created_at, updated_at, spec FROM tasks
                 WHERE id = ?1 AND owner = ?2",
                params![id, owner],
                |row| {
                    Ok((
                        TaskSummary {
                            task_id: row.get(0)?,
                            name: row.get(1)?,
                            status: row.get(2)?,
                            error: row.get(3)?,
                            created_at: row.get(4)?,
                            updated_at: row.get(5)?,
                        },
                        row.get::<_, String>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((summary, spec)) = found else {
            return Ok(None);
        };
        let steps = {
            let mut q = db.prepare(
                "SELECT step_id, kind, status, attempts, result, error, started_at, finished_at
                 FROM steps WHERE task_id = ?1 ORDER BY position",
            )?;
            q.query_map(params![id], |row| {
                Ok(StepState {
                    id: row.get(0)?,
                    kind: row.get(1)?,
                    status: row.get(2)?,
                    attempts: row.get(3)?,
                    result: raw(row.get(4)?),
                    error: row.get(5)?,
                    started_at: row.get(6)?,
                    finished_at: row.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        let history = {
            let mut q = db.prepare(
                "SELECT at, step_id, status, attempt, error FROM history
                 WHERE task_id = ?1 ORDER BY seq",
            )?;
            q.query_map(params![id], |row| {
                Ok(Change {
                    at: row.get(0)?,
                    step_id: row.get(1)?,
                    status: row.get(2)?,
                    attempt: row.get(3)?,
                    error: row.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?
        };
        Ok(Some(TaskRecord {
            summary,
            steps,
            history,
            spec,
        }))
    }

    /// The owner's tasks, newest first, `limit` at a time; `cursor` is the previous page's
    /// `next_cursor`. Returns the page and the cursor of the next one.
    pub fn list(
        &self,
        owner: &str,
        status: Option<&str>,
        limit: usize,
        cursor: Option<i64>,
    ) -> super::Result<(Vec<TaskSummary>, Option<i64>)> {
        let db = self.reader();
        let mut q = db.prepare(
            "SELECT seq, id, name, status, error, created_at, updated_at FROM tasks
             WHERE owner = ?1 AND (?2 IS NULL OR status = ?2) AND seq < ?3
             ORDER BY seq DESC LIMIT ?4",
        )?;
        let rows = q
            .query_map(
                params![
                    owner,
                    status,
                    cursor.unwrap_or(i64::MAX),
                    (limit + 1) as i64
                ],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        TaskSummary {
                            task_id: row.get(1)?,
                            name: row.get(2)?,
                            status: row.get(3)?,
                            error: row.get(4)?,
                            created_at: row.get(5)?,
                            updated_at: row.get(6)?,
                        },
                    ))
                },
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let more = rows.len() > limit;
        let page: Vec<(i64, TaskSummary)> = rows.into_iter().take(limit).collect();
        let next = if more {
            page.last().map(|(seq, _)| *seq)
        } else {
            None
        };
        Ok((page.into_iter().map(|(_, t)| t).collect(), next))
    }

    /// How many tasks the owner has stored.
    pub fn count(&self, owner: &str) -> super::Result<usize> {
        Ok(self.reader().query_row(
            "SELECT COUNT(*) FROM tasks WHERE owner = ?1",
            params![owner],
            |row| row.get::<_, i64>(0).map(|n| n as usize),
        )?)
    }

    /// The bytes of step results the owner's tasks hold.
    pub fn result_bytes(&self, owner: &str) -> super::Result<u64> {
        Ok(self.reader().query_row(
            "SELECT COALESCE(SUM(LENGTH(s.result)), 0) FROM steps s
             JOIN tasks t ON s.task_id = t.id WHERE t.owner = ?1",
            params![owner],
            |row| row.get::<_, i64>(0).map(|n| n.max(0) as u64),
        )?)
    }

    /// Deletes the owner's task and its history; whether it existed.
    pub fn delete(&self, owner: &str, id: &str) -> super::Result<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let n = tx.execute(
            "DELETE FROM tasks WHERE id = ?1 AND owner = ?2",
            params![id, owner],
        )?;
        if n > 0 {
            tx.execute("DELETE FROM steps WHERE task_id = ?1", params![id])?;
            tx.execute("DELETE FROM history WHERE task_id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(n > 0)
    }
}
