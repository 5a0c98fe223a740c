//! This node among others on one store: its id, and the loops that keep it in step.
//!
//! * **Heartbeat** (every second): the node is alive in the store's `nodes` table; jobs of
//!   nodes not seen for a task lease read `interrupted`; old change records are pruned.
//! * **Changes** (every `poll_ms`, on a PostgreSQL store): what other nodes changed (tools
//!   loaded or unloaded, settings, tenants and keys) is read from the store's change log and
//!   applied to this node's tenants, so every node sees it within about `poll_ms`.
//! * **Tasks** (every third of a lease): leases renewed, cancels relayed, orphaned tasks taken
//!   over ([`crate::tasks::Service::tend`]).
//!
//! Each loop is owned by the [`Background`] the server holds: dropped, they stop.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::store::cluster::Change;
use crate::store::{Backend, Store};
use crate::tenants::Tenants;

const NODE_ID_FILE: &str = "node-id";
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Changes are kept an hour: a node away longer reads everything again when it starts.
const KEEP_CHANGES_S: f64 = 3600.0;
/// How far back each read of the change log looks, so a change whose transaction committed
/// after a later-numbered one is still seen.
const CHANGE_WINDOW: i64 = 512;

/// This node's id: the configured one, else one made once and kept in the data dir.
pub fn node_id(config: &Config) -> anyhow::Result<String> {
    if let Some(id) = &config.cluster.node_id {
        return Ok(id.clone());
    }
    let path = config.data_dir.join(NODE_ID_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let id = text.trim();
        if crate::names::is_node_id(id) {
            return Ok(id.to_owned());
        }
    }
    let id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    write_id(&path, &id).with_context(|| format!("recording the node id in {}", path.display()))?;
    Ok(id)
}

fn write_id(path: &Path, id: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, id)?;
    std::fs::rename(tmp, path)
}

/// The loops of a running node; they stop when this is dropped.
pub struct Background(Vec<JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// Starts this node's loops.
pub async fn start(
    config: &Config,
    store: &Store,
    tenants: &Arc<Tenants>,
    tasks: &Arc<crate::tasks::Service>,
    mark: Mark,
) -> Background {
    let started_at = crate::store::now();
    let lease = Duration::from_secs(config.cluster.task_lease_s);
    // The first round before anything is served: what this node's previous process left
    // running is taken over (and reads `interrupted`) before a client can ask about it.
    let mut renewed = Instant::now();
    tasks.tend(tenants.as_ref(), &mut renewed).await;
    let mut loops = vec![
        tokio::spawn(heartbeat(store.clone(), started_at, lease)),
        tokio::spawn(tend_tasks(
            Arc::clone(tasks),
            Arc::clone(tenants),
            lease,
            renewed,
        )),
    ];
    if store.backend() == Backend::Postgres {
        let every = Duration::from_millis(config.cluster.poll_ms);
        loops.push(tokio::spawn(follow_changes(
            store.clone(),
            Arc::clone(tenants),
            every,
            mark,
        )));
    }
    Background(loops)
}

async fn heartbeat(store: Store, started_at: f64, lease: Duration) {
    let mut beats = 0u64;
    loop {
        if let Err(err) = store.heartbeat(store.node(), started_at).await {
            tracing::warn!(cause = %err, "heartbeat failed");
        }
        // Jobs of nodes silent for a whole lease read interrupted.
        let now = crate::store::now();
        match store.interrupt_jobs(now, now - lease.as_secs_f64()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(jobs = n, "jobs of nodes that stopped are interrupted"),
            Err(err) => tracing::warn!(cause = %err, "could not interrupt lost jobs"),
        }
        if beats.is_multiple_of(600)
            && let Err(err) = store
                .prune_changes(crate::store::now() - KEEP_CHANGES_S)
                .await
        {
            tracing::warn!(cause = %err, "could not prune the change log");
        }
        beats += 1;
        tokio::time::sleep(HEARTBEAT).await;
    }
}

async fn tend_tasks(
    tasks: Arc<crate::tasks::Service>,
    tenants: Arc<Tenants>,
    lease: Duration,
    mut renewed: Instant,
) {
    loop {
        tokio::time::sleep(lease / 3).await;
        tasks.tend(tenants.as_ref(), &mut renewed).await;
    }
}

/// Where the change log stood before the node restored its records: the changes it had
/// then are in what it restored; every later one is applied.
#[derive(Debug, Default, Clone)]
pub struct Mark {
    high: i64,
    seen: BTreeSet<i64>,
}

/// Reads the change log's [`Mark`]; to be called before the records are restored, so that
/// no change made while they were read is missed.
pub async fn mark(store: &Store) -> Mark {
    let high = match store.last_change().await {
        Ok(seq) => seq,
        Err(err) => {
            tracing::warn!(cause = %err, "could not read the change log; following from the start");
            return Mark::default();
        }
    };
    let mut seen = BTreeSet::new();
    if let Ok(before) = store
        .changes_since((high - CHANGE_WINDOW).max(0), CHANGE_WINDOW)
        .await
    {
        seen.extend(before.iter().map(|c| c.seq));
    }
    Mark { high, seen }
}

async fn follow_changes(store: Store, tenants: Arc<Tenants>, every: Duration, mark: Mark) {
    let Mark { mut high, mut seen } = mark;
    loop {
        tokio::time::sleep(every).await;
        let low = (high - CHANGE_WINDOW).max(0);
        let changes = match store.changes_since(low, 4 * CHANGE_WINDOW).await {
            Ok(changes) => changes,
            Err(err) => {
                tracing::warn!(cause = %err, "could not read the change log");
                continue;
            }
        };
        let fresh: Vec<Change> = changes
            .into_iter()
            .filter(|c| !seen.contains(&c.seq))
            .collect();
        if fresh.is_empty() {
            continue;
        }
        let mut owners = HashSet::new();
        for change in &fresh {
            seen.insert(change.seq);
            high = high.max(change.seq);
            owners.insert((change.owner.clone(), change.kind));
        }
        // Forget what fell out of the window.
        let floor = (high - CHANGE_WINDOW).max(0);
        seen = seen.split_off(&floor);
        // Each owner's change applied at once, and all of them before the next round.
        let mut applying = tokio::task::JoinSet::new();
        for (owner, kind) in owners {
            let tenants = Arc::clone(&tenants);
            applying.spawn(async move { tenants.apply(&owner, kind).await });
        }
        while applying.join_next().await.is_some() {}
    }
}
