//! The store's own suite: every record kind written and read back, the rules the store keeps
//! inside its transactions (script quotas and pruning, owner deletion, task leases), and
//! what a new process finds (migrations run once, interrupted jobs), against both backends:
//! SQLite in a temporary folder and a real PostgreSQL server the test starts.

use scriptbox::store::jobs::JobRecord;
use scriptbox::store::scripts::{NewVersion, Put, ScriptQuota, ScriptQuotas};
use scriptbox::store::tenants::{KeyRecord, TenantRecord};
use scriptbox::store::tools::ToolRecord;
use scriptbox::store::{Backend, Location, Store};
use scriptbox_tests::services::Postgres;

/// What keeps a test's store alive (its folder, its server), dropped at the test's end.
type Keep = Box<dyn std::any::Any>;

/// A fresh store of each backend.
async fn stores() -> Vec<(Store, Keep)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Store::open(&Location::Sqlite(dir.path().join("store.db")))
        .await
        .expect("sqlite store")
        .for_node("n1");
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .expect("postgres")
        .expect("postgres");
    let url = pg.database("suite").expect("database");
    let postgres = Store::open(&Location::Postgres(url))
        .await
        .expect("postgres store")
        .for_node("n1");
    assert_eq!(postgres.backend(), Backend::Postgres);
    vec![(sqlite, Box::new(dir)), (postgres, Box::new(pg))]
}

const QUOTAS: ScriptQuotas = ScriptQuotas {
    max_scripts: 2,
    max_total_bytes: 100,
    max_versions: 2,
};

fn version(name: &str, v: &str, content: &'static [u8]) -> (String, String, &'static [u8]) {
    (name.to_owned(), v.to_owned(), content)
}

async fn put(store: &Store, owner: &str, (name, v, content): &(String, String, &[u8])) -> Put {
    store
        .put_script(
            owner,
            &NewVersion {
                name,
                version: v,
                kind: "module",
                content,
            },
            QUOTAS,
        )
        .await
        .expect("put")
}

fn tool(alias: &str, script: &str, v: &str) -> ToolRecord {
    ToolRecord {
        alias: alias.into(),
        script_name: script.into(),
        source: "tenant".into(),
        version: v.into(),
        mode: "persistent".into(),
        limits: "{}".into(),
        debug: "{}".into(),
        loaded_at: 1.0,
    }
}

#[tokio::test]
async fn script_versions_quotas_and_pruning() {
    for (store, _keep) in stores().await {
        let a1 = version("a", "a1", b"0123456789");
        assert!(matches!(put(&store, "o", &a1).await, Put::Created(_)));
        assert!(matches!(put(&store, "o", &a1).await, Put::Unchanged(_)));
        let a2 = version("a", "a2", b"abcdefghij");
        assert!(matches!(put(&store, "o", &a2).await, Put::Created(_)));
        // An older content again is the latest again.
        assert!(matches!(put(&store, "o", &a1).await, Put::Restored(_)));
        let latest = store.script_version("o", "a", None).await.expect("read");
        assert_eq!(latest.map(|m| m.version).as_deref(), Some("a1"));
        // max_versions: a third version prunes the oldest (a2 now)...
        let a3 = version("a", "a3", b"three");
        assert!(matches!(put(&store, "o", &a3).await, Put::Created(_)));
        let versions: Vec<String> = store
            .script_versions("o", "a")
            .await
            .expect("versions")
            .into_iter()
            .map(|m| m.version)
            .collect();
        assert_eq!(versions, ["a3", "a1"]);
        // ...unless a tool runs it.
        store
            .put_tool("o", &tool("t", "a", "a1"))
            .await
            .expect("tool");
        let a4 = version("a", "a4", b"four");
        assert!(matches!(put(&store, "o", &a4).await, Put::Created(_)));
        let count = store
            .script_versions("o", "a")
            .await
            .expect("versions")
            .len();
        assert_eq!(count, 3, "a1 is kept for the tool");
        // max_scripts: a second name fits, a third does not.
        assert!(matches!(
            put(&store, "o", &version("b", "b1", b"b")).await,
            Put::Created(_)
        ));
        assert_eq!(
            put(&store, "o", &version("c", "c1", b"c")).await,
            Put::Refused(ScriptQuota::Scripts(2))
        );
        // max_total_bytes: 100 in all.
        assert_eq!(
            put(&store, "o", &version("b", "b2", &[b'x'; 90])).await,
            Put::Refused(ScriptQuota::TotalBytes(100))
        );
        // Another owner is another namespace.
        assert!(matches!(
            put(&store, "p", &version("a", "a1", b"mine")).await,
            Put::Created(_)
        ));
        assert_eq!(
            store
                .script_content("p", "a", "a1")
                .await
                .expect("read")
                .as_deref(),
            Some(&b"mine"[..])
        );
        assert_eq!(
            store
                .script_content("o", "a", "a1")
                .await
                .expect("read")
                .as_deref(),
            Some(&b"0123456789"[..])
        );
        let listed = store.scripts("o").await.expect("list");
        let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(store.delete_script("o", "a").await.expect("delete"));
        assert!(!store.delete_script("o", "a").await.expect("delete"));
        assert!(
            store
                .script_versions("o", "a")
                .await
                .expect("read")
                .is_empty()
        );
    }
}

#[tokio::test]
async fn tools_and_settings() {
    for (store, _keep) in stores().await {
        store
            .put_tool("o", &tool("t", "s", "v1"))
            .await
            .expect("put");
        store
            .put_tool("o", &tool("t", "s", "v2"))
            .await
            .expect("upsert");
        store
            .put_tool("o", &tool("u", "s", "v1"))
            .await
            .expect("put");
        store
            .put_tool("p", &tool("t", "s", "v1"))
            .await
            .expect("put");
        let tools = store.tools("o").await.expect("tools");
        assert_eq!(tools.len(), 2);
        assert_eq!(tools[0].version, "v2");
        assert!(
            store
                .set_tool_debug("o", "t", "{\"trace\":true}")
                .await
                .expect("debug")
        );
        assert_eq!(
            store.tools("o").await.expect("tools")[0].debug,
            "{\"trace\":true}"
        );
        assert_eq!(
            store.tools_using("o", "s").await.expect("users"),
            ["t", "u"]
        );
        assert!(store.delete_tool("o", "t").await.expect("delete"));
        assert!(!store.delete_tool("o", "t").await.expect("delete"));
        store.put_setting("o", "k", "1").await.expect("set");
        store.put_setting("o", "k", "2").await.expect("set");
        assert_eq!(
            store.settings("o").await.expect("settings"),
            [("k".to_owned(), "2".to_owned())]
        );
        store.delete_setting("o", "k").await.expect("delete");
        assert!(store.settings("o").await.expect("settings").is_empty());
        assert_eq!(store.tools("p").await.expect("tools").len(), 1);
    }
}

#[tokio::test]
async fn jobs_are_interrupted_by_a_new_process_and_expire() {
    for (store, _keep) in stores().await {
        let job = |id: &str, created: f64| JobRecord {
            id: id.into(),
            alias: "a".into(),
            function_name: "f".into(),
            status: "running".into(),
            created_at: created,
            finished_at: None,
            result: None,
            error: None,
        };
        store
            .insert_job("o", &job("j1", 1.0))
            .await
            .expect("insert");
        store
            .insert_job("o", &job("j2", 2.0))
            .await
            .expect("insert");
        let mut done = job("j1", 1.0);
        done.status = "succeeded".into();
        done.finished_at = Some(10.0);
        done.result = Some("42".into());
        store.finish_job(&done).await.expect("finish");
        assert_eq!(
            store.interrupt_jobs(20.0, 20.0).await.expect("interrupt"),
            1
        );
        let jobs = store.jobs("o").await.expect("jobs");
        assert_eq!(jobs[0].status, "succeeded");
        assert_eq!(jobs[0].result.as_deref(), Some("42"));
        assert_eq!(jobs[1].status, "interrupted");
        // A finish after the interruption leaves it interrupted.
        let mut late = job("j2", 2.0);
        late.status = "succeeded".into();
        store.finish_job(&late).await.expect("finish");
        assert_eq!(
            store.jobs("o").await.expect("jobs")[1].status,
            "interrupted"
        );
        store.expire_jobs("o", 15.0).await.expect("expire");
        let left: Vec<String> = store
            .jobs("o")
            .await
            .expect("jobs")
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(left, ["j2"], "j1 finished at 10 < 15; j2 at 20");
    }
}

#[tokio::test]
async fn tenants_keys_and_everything_an_owner_has_go_together() {
    for (store, _keep) in stores().await {
        let tenant = TenantRecord {
            id: "acme".into(),
            role: "tenant".into(),
            spec: "{}".into(),
            created_at: 1.0,
        };
        let key = |id: &str, digest: &str| KeyRecord {
            id: id.into(),
            tenant: "acme".into(),
            sha256: digest.into(),
            created_at: 1.0,
        };
        assert!(
            store
                .insert_tenant(&tenant, &key("k1", "d1"))
                .await
                .expect("insert")
        );
        assert!(
            !store
                .insert_tenant(&tenant, &key("k9", "d9"))
                .await
                .expect("again")
        );
        assert!(store.add_key(&key("k2", "d2")).await.expect("add"));
        let mut ghost = key("k3", "d3");
        ghost.tenant = "ghost".into();
        assert!(!store.add_key(&ghost).await.expect("add to nobody"));
        assert_eq!(store.key_records().await.expect("keys").len(), 2);
        assert!(store.delete_key("acme", "k1").await.expect("revoke"));
        assert!(!store.delete_key("acme", "k1").await.expect("revoke again"));
        // What the tenant owns goes with it.
        store
            .put_tool("acme", &tool("t", "s", "v"))
            .await
            .expect("tool");
        store.put_setting("acme", "k", "1").await.expect("setting");
        store
            .insert_task("task1", "acme", "n", "{}", &[("s", "call")], 0.0)
            .await
            .expect("task");
        put(&store, "acme", &version("s", "v", b"x")).await;
        store
            .put_tool("other", &tool("t", "s", "v"))
            .await
            .expect("tool");
        assert!(store.delete_tenant("acme").await.expect("delete"));
        assert!(store.tenant_records().await.expect("tenants").is_empty());
        assert!(store.key_records().await.expect("keys").is_empty());
        assert!(store.tools("acme").await.expect("tools").is_empty());
        assert!(store.settings("acme").await.expect("settings").is_empty());
        assert!(store.scripts("acme").await.expect("scripts").is_empty());
        assert_eq!(store.task_count("acme").await.expect("tasks"), 0);
        assert_eq!(store.tools("other").await.expect("tools").len(), 1);
    }
}

#[tokio::test]
async fn task_leases_are_held_by_one_node_and_taken_over_when_they_expire() {
    for (store, _keep) in stores().await {
        let (a, b) = (store.for_node("a"), store.for_node("b"));
        a.insert_task("t1", "o", "n", "{}", &[("s", "call")], 100.0)
            .await
            .expect("insert");
        // Node b cannot claim a's live lease, finds it orphaned once the lease has run out.
        assert!(!b.claim_task("t1", 50.0, 150.0).await.expect("claim"));
        assert!(
            b.orphaned_tasks(50.0, 10)
                .await
                .expect("orphans")
                .is_empty()
        );
        let orphans = b.orphaned_tasks(101.0, 10).await.expect("orphans");
        assert_eq!(orphans.len(), 1);
        assert!(b.claim_task("t1", 101.0, 200.0).await.expect("claim"));
        // Now a has lost it: its renewal does not take it back.
        assert_eq!(a.renew_leases(300.0).await.expect("renew"), 0);
        assert!(!a.claim_task("t1", 150.0, 250.0).await.expect("claim"));
        assert_eq!(b.renew_leases(300.0).await.expect("renew"), 1);
        // A node's own previous process: its tasks are orphans at once.
        assert_eq!(b.orphaned_tasks(0.0, 10).await.expect("orphans").len(), 1);
        // A cancel through another node reaches the holder.
        assert!(a.request_cancel("o", "t1").await.expect("cancel"));
        assert_eq!(b.cancel_requests().await.expect("requests"), ["t1"]);
        assert!(a.cancel_requests().await.expect("requests").is_empty());
        assert_eq!(a.unfinished_tasks("o").await.expect("count"), 1);
        b.set_task("t1", "succeeded", None).await.expect("finish");
        assert_eq!(a.unfinished_tasks("o").await.expect("count"), 0);
        assert!(
            b.orphaned_tasks(1e12, 10)
                .await
                .expect("orphans")
                .is_empty()
        );
        let record = a.task("o", "t1").await.expect("read").expect("task");
        let nodes: Vec<Option<&str>> = record.history.iter().map(|c| c.node.as_deref()).collect();
        assert_eq!(nodes, [Some("a"), Some("b")], "{:?}", record.history);
    }
}

#[tokio::test]
async fn the_tool_quota_counts_every_nodes_tools() {
    for (store, _keep) in stores().await {
        let (a, b) = (store.for_node("a"), store.for_node("b"));
        assert!(
            a.put_new_tool("o", &tool("t1", "s", "v"), 2)
                .await
                .expect("put")
        );
        assert!(
            b.put_new_tool("o", &tool("t2", "s", "v"), 2)
                .await
                .expect("put")
        );
        assert!(
            !a.put_new_tool("o", &tool("t3", "s", "v"), 2)
                .await
                .expect("put")
        );
        // The same alias again is not a new tool.
        assert!(
            b.put_new_tool("o", &tool("t2", "s", "v2"), 2)
                .await
                .expect("put")
        );
        assert!(
            a.put_new_tool("p", &tool("t1", "s", "v"), 2)
                .await
                .expect("put")
        );
    }
}

#[tokio::test]
async fn changes_are_logged_for_the_other_nodes() {
    for (store, _keep) in stores().await {
        let before = store.last_change().await.expect("last");
        store
            .put_tool("o", &tool("t", "s", "v"))
            .await
            .expect("tool");
        store.put_setting("p", "k", "1").await.expect("setting");
        let changes = store.changes_since(before, 10).await.expect("changes");
        let owners: Vec<&str> = changes.iter().map(|c| c.owner.as_str()).collect();
        assert_eq!(owners, ["o", "p"]);
        store.heartbeat("n1", 1.0).await.expect("heartbeat");
        let live = store.live_nodes(0.0).await.expect("nodes");
        assert_eq!(live, ["n1"]);
    }
}

#[tokio::test]
async fn a_store_opened_again_keeps_its_records_and_migrates_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let location = Location::Sqlite(dir.path().join("store.db"));
    let store = Store::open(&location).await.expect("open");
    store
        .put_tool("o", &tool("t", "s", "v"))
        .await
        .expect("tool");
    store.close().await;
    let again = Store::open(&location).await.expect("open again");
    assert_eq!(again.tools("o").await.expect("tools").len(), 1);
    assert!(again.reachable().await);
}
