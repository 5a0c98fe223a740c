//! Instance isolation seen from the host: a fresh instance's linear memory holds no byte of
//! what an earlier instance held.

use scriptbox::config::Config;
use scriptbox::sandbox::{
    ImageKind, ImagesState, Limits, Mounts, Outcome, Sandbox, StartLimits, ToolMounts,
};
use serde_json::value::RawValue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_never_sees_a_previous_instances_bytes() {
    let engine = tokio::task::spawn_blocking(scriptbox_tests::engine)
        .await
        .expect("engine");
    let dir = tempfile::tempdir().expect("tempdir");
    let scripts = dir.path().join("scripts");
    scriptbox_tests::copy_scripts(&scripts);
    let config = Config::default();
    let mounts = Mounts {
        stdlib: config.stdlib_dir(),
        driver: scriptbox::guest::install_driver(&dir.path().join("data")).expect("driver"),
    };
    let sandbox = Sandbox::new(engine, mounts, StartLimits::default()).expect("sandbox");
    // On the pre-initialised image, as a server's instances start: every instance of it
    // shares the image's pages, and must still never see another instance's bytes.
    sandbox
        .prepare_images(&config.plain_wasm(), &config.cache_dir)
        .await;
    assert_eq!(sandbox.images_state(), ImagesState::Ready);
    let tool = ToolMounts {
        scripts,
        scratch: None,
        max_open_files: 64,
        sys_paths: Vec::new(),
        site_packages: None,
        preload: Default::default(),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let secret = format!("tenant-a-secret-{nanos:x}");
    let limits = Limits::default();

    let mut first = sandbox
        .spawn("attacker", &limits, &tool)
        .await
        .expect("spawn");
    assert_eq!(first.image(), ImageKind::Driver);
    let args = RawValue::from_string(format!("[\"{secret}\"]")).expect("args");
    let kwargs = RawValue::from_string("{}".into()).expect("kwargs");
    let outcome = first.call("remember", &args, &kwargs).await;
    assert!(
        matches!(outcome, Outcome::Answered { error: None, .. }),
        "{outcome:?}"
    );
    let stored = secret.repeat(4);
    let report = first
        .inspect_memory(stored.clone().into_bytes())
        .await
        .expect("inspect the first instance");
    assert!(report.contains, "the scan must find the secret where it is");
    assert!(report.linear_bytes > 1 << 20);
    drop(first);

    for _ in 0..3 {
        let mut next = sandbox
            .spawn("attacker", &limits, &tool)
            .await
            .expect("spawn");
        for needle in [stored.as_bytes(), secret.as_bytes()] {
            let report = next
                .inspect_memory(needle.to_vec())
                .await
                .expect("inspect a fresh instance");
            assert!(
                !report.contains,
                "a fresh instance holds the previous secret"
            );
        }
    }
}
