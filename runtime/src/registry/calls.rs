//! Running work in an owner's tools: calls (through the result cache), other ops, task
//! steps (cancelled when dropped), the session interpreter, fresh sandboxes, and the
//! maintenance jobs (memory, eviction).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::actor::Tool;
use super::job::{CancelOnDrop, Job};
use super::load::Start;
use super::{
    CallReport, Mode, Registry, RegistryError, SESSION_ALIAS, Slot, cache, host, lock, observe,
};
use crate::metrics::NO_TOOL;
use crate::names::{check_function, check_script};
use crate::protocol::Op;
use crate::sandbox::{Outcome, Output, OutputSink, RunOptions, Stream};
use crate::scripts::{ScriptRef, Source};

impl Registry {
    /// Calls `function(*args, **kwargs)` in the tool loaded as `alias`.
    pub async fn call(
        self: &Arc<Self>,
        alias: &str,
        function: &str,
        args: Box<RawValue>,
        kwargs: Box<RawValue>,
    ) -> Result<CallReport, RegistryError> {
        self.call_with(alias, function, args, kwargs, false, None)
            .await
    }

    /// As [`Registry::call`], but a caller that drops the future before the answer stops
    /// the guest (a client that cancels or goes away), and with the call's `print()` output
    /// sent to `stream` as it is written (a cached answer's output is sent as it was kept).
    pub async fn call_watched(
        self: &Arc<Self>,
        alias: &str,
        function: &str,
        args: Box<RawValue>,
        kwargs: Box<RawValue>,
        stream: Option<OutputSink>,
    ) -> Result<CallReport, RegistryError> {
        self.call_with(alias, function, args, kwargs, true, stream)
            .await
    }

    async fn call_with(
        self: &Arc<Self>,
        alias: &str,
        function: &str,
        args: Box<RawValue>,
        kwargs: Box<RawValue>,
        abandonable: bool,
        stream: Option<OutputSink>,
    ) -> Result<CallReport, RegistryError> {
        check_function(function)?;
        if self.cache.enabled() {
            let tool = self.ready(alias).await?;
            let script = *lock(&tool.script_hash);
            let key = cache::key(alias, tool.stats.load_id, function, &args, &kwargs, &script);
            if let Some(hit) = self.cache.get(&key) {
                if let Some(sink) = &stream {
                    replay(sink, &hit.stdout, &hit.stderr);
                }
                let answer = Ok(CallReport {
                    outcome: Outcome::Answered {
                        result: Some(hit.result),
                        error: None,
                        stdout: hit.stdout,
                        stderr: hit.stderr,
                        fuel_used: 0,
                        elapsed: std::time::Duration::ZERO,
                        memory_capped: false,
                        debug: None,
                    },
                    state_reset: false,
                    cached: true,
                    egress: Default::default(),
                    cpu: std::time::Duration::ZERO,
                });
                self.observe(alias, observe::mode_name(tool.mode), &answer);
                return answer;
            }
        }
        let op = Op::Call {
            function: function.to_owned(),
            args,
            kwargs,
        };
        if abandonable {
            return self.run_watched(alias, op, stream).await;
        }
        self.run(alias, op).await
    }

    /// Runs `op` as [`Registry::run`]; dropping the future before the answer (the caller
    /// went away) stops the guest, as at a deadline. With a `stream`, the op's `print()`
    /// output is sent there as it is written.
    pub async fn run_watched(
        self: &Arc<Self>,
        alias: &str,
        op: Op,
        stream: Option<OutputSink>,
    ) -> Result<CallReport, RegistryError> {
        let (cancel, cancelled) = oneshot::channel();
        let mut guard = CancelOnDrop(Some(cancel));
        let report = self
            .submit_run(alias, op, Some(cancelled), None, true, stream)
            .await;
        guard.disarm();
        report
    }

    /// Runs `op` in the tool loaded as `alias`, under its call limits and this owner's call
    /// quotas. Names inside `op` must have been checked by the caller.
    pub async fn run(self: &Arc<Self>, alias: &str, op: Op) -> Result<CallReport, RegistryError> {
        self.run_job(alias, op, None, None).await
    }

    /// As [`Registry::run`], without counting it in the tool's `calls`: for the server's own
    /// checks (a tool's requirements at load), which a client did not ask for.
    pub async fn run_uncounted(
        self: &Arc<Self>,
        alias: &str,
        op: Op,
        within: Option<std::time::Duration>,
    ) -> Result<CallReport, RegistryError> {
        self.submit_run(alias, op, None, within, false, None).await
    }

    /// As [`Registry::run`]; a message on `cancel` stops the guest mid-call (the instance is
    /// replaced and the call answered [`Fault::Cancelled`]). Dropping the sender does not
    /// cancel.
    pub async fn run_cancellable(
        self: &Arc<Self>,
        alias: &str,
        op: Op,
        cancel: Option<oneshot::Receiver<()>>,
    ) -> Result<CallReport, RegistryError> {
        self.run_job(alias, op, cancel, None).await
    }

    /// Runs `op` in `alias` for a task step, the deadline lowered to `within`. Dropping the
    /// future before it is answered stops the guest (the instance is replaced) or, if the job
    /// still waits in the queue, skips it.
    pub async fn run_step(
        self: &Arc<Self>,
        alias: &str,
        op: Op,
        within: Option<std::time::Duration>,
    ) -> Result<CallReport, RegistryError> {
        let (cancel, cancelled) = oneshot::channel();
        let mut guard = CancelOnDrop(Some(cancel));
        let answer = self.run_job(alias, op, Some(cancelled), within).await;
        guard.disarm();
        answer
    }

    /// Runs `op` in the owner's session interpreter (an empty namespace that keeps what is
    /// defined in it), started on first use under the owner's default limits; `within`
    /// lowers the deadline for this request. It takes one of the owner's tool slots, is not
    /// listed, and is evicted like any idle tool.
    /// A `stream` gets the op's `print()` output as it is written; dropping the future
    /// before the answer stops the guest.
    pub async fn run_session(
        self: &Arc<Self>,
        op: Op,
        within: Option<std::time::Duration>,
        stream: Option<OutputSink>,
    ) -> Result<CallReport, RegistryError> {
        if self.get(SESSION_ALIAS).is_err() {
            let limits = self.settings.limits.lowered(&self.settings.defaults)?;
            let script = ScriptRef {
                name: crate::protocol::SCRATCH_MODULE.to_owned(),
                source: Source::Shared,
                version: String::new(),
                dir: self.settings.shared_scripts.clone(),
            };
            match self
                .start_tool(Start {
                    script,
                    alias: SESSION_ALIAS,
                    limits,
                    mode: Mode::Persistent,
                    restored: None,
                })
                .await
            {
                // started meanwhile by a concurrent request: use it once it is ready
                Ok(_) | Err(RegistryError::AliasExists) => {}
                Err(err) => return Err(err),
            }
        }
        let (cancel, cancelled) = oneshot::channel();
        let mut guard = CancelOnDrop(Some(cancel));
        let report = self
            .submit_run(SESSION_ALIAS, op, Some(cancelled), within, true, stream)
            .await;
        guard.disarm();
        report.map_err(|err| match err {
            RegistryError::NotFound => RegistryError::Busy,
            other => other,
        })
    }

    async fn run_job(
        self: &Arc<Self>,
        alias: &str,
        op: Op,
        cancel: Option<oneshot::Receiver<()>>,
        within: Option<std::time::Duration>,
    ) -> Result<CallReport, RegistryError> {
        self.submit_run(alias, op, cancel, within, true, None).await
    }

    /// Queues `op` for `alias` under this owner's call quotas and waits for its report.
    async fn submit_run(
        self: &Arc<Self>,
        alias: &str,
        op: Op,
        cancel: Option<oneshot::Receiver<()>>,
        within: Option<std::time::Duration>,
        counted: bool,
        stream: Option<OutputSink>,
    ) -> Result<CallReport, RegistryError> {
        let tool = self.ready(alias).await?;
        let refused = |registry: &Self, err: RegistryError| {
            let refused = Err(err);
            if counted {
                registry.observe(alias, observe::mode_name(tool.mode), &refused);
            }
            refused
        };
        let permits = match self.admit_call() {
            Ok(permits) => permits,
            Err(err) => return refused(self, err),
        };
        let (reply, answer) = oneshot::channel();
        let submitted = tool.submit(Job::Run {
            op,
            reply,
            permits,
            cancel,
            chain: Vec::new(),
            within,
            counted,
            stream,
        });
        if let Err(err) = submitted {
            return refused(self, err);
        }
        answer.await.map_err(|_| RegistryError::Unloaded)?
    }

    /// The tool loaded as `alias`, started first if it was restored dormant.
    pub(super) async fn ready(self: &Arc<Self>, alias: &str) -> Result<Arc<Tool>, RegistryError> {
        // One look at the table on the warm path (every call comes through here).
        match self.slots().get(alias) {
            Some(Slot::Ready(tool)) => return Ok(Arc::clone(tool)),
            // Loading: maybe a concurrent request waking it; `wake` waits for that one.
            Some(Slot::Dormant(_) | Slot::Loading) => {}
            None => return Err(RegistryError::NotFound),
        }
        self.wake(alias).await?;
        self.get(alias)
    }

    /// The linear memory of `alias`'s instance in bytes (`None` while it has none, or while
    /// a restored tool has not started).
    pub async fn linear_memory(&self, alias: &str) -> Result<Option<usize>, RegistryError> {
        if matches!(self.slots().get(alias), Some(Slot::Dormant(_))) {
            return Ok(None);
        }
        let tool = self.get(alias)?;
        let (reply, answer) = oneshot::channel();
        tool.submit(Job::LinearMemory { reply })?;
        answer.await.map_err(|_| RegistryError::Unloaded)
    }

    /// Drops the instances of tools idle for at least `idle_for`; each restarts on its next
    /// call (state reset, live objects lost). Returns the aliases evicted.
    pub async fn evict_idle(&self, idle_for: std::time::Duration) -> Vec<String> {
        let tools = self.ready_tools();
        let mut evicted = Vec::new();
        for tool in tools {
            let (reply, answer) = oneshot::channel();
            if tool.submit(Job::Evict { idle_for, reply }).is_ok() && answer.await.unwrap_or(false)
            {
                self.cache.invalidate(&tool.alias);
                evicted.push(tool.alias.clone());
            }
        }
        evicted.sort();
        evicted
    }

    /// Runs `op` in a fresh sandbox, under this owner's default limits (the deadline lowered
    /// to `within` if given) and call quotas, without a scratch folder; the instance is
    /// dropped afterwards. `module` is a checked script name, or
    /// [`SCRATCH_MODULE`](crate::protocol::SCRATCH_MODULE) for an empty namespace.
    pub async fn run_fresh(
        self: &Arc<Self>,
        module: &str,
        op: Op,
        within: Option<std::time::Duration>,
    ) -> Result<CallReport, RegistryError> {
        self.run_fresh_watched(module, op, within, None).await
    }

    /// As [`Registry::run_fresh`], with the `print()` output sent to `stream` as it is
    /// written. (Dropping the future drops the sandbox, so an abandoned run always stops.)
    pub async fn run_fresh_watched(
        self: &Arc<Self>,
        module: &str,
        op: Op,
        within: Option<std::time::Duration>,
        stream: Option<OutputSink>,
    ) -> Result<CallReport, RegistryError> {
        let scripts = if module == crate::protocol::SCRATCH_MODULE {
            self.settings.shared_scripts.clone()
        } else {
            check_script(module)?;
            self.scripts
                .resolve(
                    &self.settings.owner,
                    &self.settings.shared_scripts,
                    module,
                    None,
                )
                .await?
                .dir
        };
        let _permits = match self.admit_call() {
            Ok(permits) => permits,
            Err(err) => {
                let refused = Err(err);
                self.observe(NO_TOOL, "isolated", &refused);
                return refused;
            }
        };
        self.fresh_runs.fetch_add(1, Ordering::Relaxed);
        let limits = self.settings.limits.lowered(&self.settings.defaults)?;
        let mounts = self.tool_mounts(&scripts, None);
        let mut instance = self.sandbox.spawn(module, &limits, &mounts).await?;
        let registry = Arc::downgrade(self);
        let host = host::JobHost {
            registry: &registry,
            outer: Vec::new(),
            own: None,
            http: Default::default(),
        };
        let options = RunOptions {
            host: &host,
            within,
            debug: None,
            stream: stream.as_ref(),
        };
        let outcome = instance.run_opts(&op, &options).await;
        let answer = Ok(CallReport {
            outcome,
            state_reset: false,
            cached: false,
            egress: host.http.usage(),
            // A fresh sandbox's start is the run's work.
            cpu: instance.cpu_used(),
        });
        self.observe(NO_TOOL, "isolated", &answer);
        answer
    }
}

/// Sends a kept answer's output to a stream, as the call would have written it.
fn replay(sink: &OutputSink, stdout: &str, stderr: &str) {
    for (stream, text) in [(Stream::Stdout, stdout), (Stream::Stderr, stderr)] {
        if !text.is_empty() {
            let _ = sink.send(Output {
                stream,
                text: text.to_owned(),
            });
        }
    }
}
