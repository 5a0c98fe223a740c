//! A running instance: the guest future, polled inline by the caller, and the door's
//! request/response exchange with the driver under the call's fuel, deadline and caps.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use tokio::sync::mpsc;
use wasmtime::{InstancePre, Store};

use super::door::{Delivery, GuestFrame, Inspection, ToGuest};
use super::outcome::ended_with;
use super::tap::{FLUSH_EVERY, OutputSink, Tap};
use super::{
    DEADLINE_GRACE, Fault, GuestState, HostCalls, ImageKind, MAX_RESULT_BYTES, MemoryReport,
    NoHost, Outcome, SpawnError, host, image,
};
use crate::limits::Limits;
use crate::protocol::{self, GuestError, GuestErrorKind, HostRequest, Op, Request, Response};

/// The largest response frame for these limits.
pub(super) fn max_frame(limits: &Limits) -> usize {
    let output = usize::try_from(limits.output_bytes).unwrap_or(usize::MAX);
    output.saturating_mul(6).saturating_add(MAX_RESULT_BYTES)
}

/// The running guest: the whole life of the interpreter as one future.
pub(super) type GuestFuture = Pin<Box<dyn Future<Output = wasmtime::Result<i32>> + Send>>;

/// The guest: instantiate, initialise the reactor, run the driver until it stops.
pub(super) async fn run_guest(
    pre: InstancePre<GuestState>,
    mut store: Store<GuestState>,
) -> wasmtime::Result<i32> {
    let instance = pre.instantiate_async(&mut store).await?;
    if let Ok(init) = instance.get_typed_func::<(), ()>(&mut store, "_initialize") {
        init.call_async(&mut store, ()).await?;
    }
    let run = instance.get_typed_func::<(), i32>(&mut store, "run")?;
    run.call_async(&mut store, ()).await
}

/// The guest from an image: instantiate (no `_initialize`: the image is past it) and boot
/// the driver the image imported with one turn, which runs until the driver stops.
pub(super) async fn boot_image(
    pre: InstancePre<GuestState>,
    mut store: Store<GuestState>,
    boot: Vec<u8>,
) -> wasmtime::Result<i32> {
    let instance = pre.instantiate_async(&mut store).await?;
    let value = image::run_turn(&mut store, &instance, &boot).await?;
    Ok(image::exit_status(value))
}

pub(super) enum Received {
    Frame(GuestFrame),
    Fault(Fault),
}

/// How one request runs besides its op.
#[derive(Clone, Copy)]
pub struct RunOptions<'a> {
    /// Answers the guest's host calls.
    pub host: &'a dyn HostCalls,
    /// A lower deadline for this request than the instance's (never a higher one).
    pub within: Option<Duration>,
    /// Tracing for this request.
    pub debug: Option<&'a protocol::Debug>,
    /// Streams the request's `print()` output here as it is written ([`super::tap`]); all
    /// of it has been sent when the outcome is returned.
    pub stream: Option<&'a OutputSink>,
}

/// A live guest. Dropping it stops the guest.
pub struct Instance {
    pub(super) to_guest: mpsc::Sender<ToGuest>,
    pub(super) from_guest: mpsc::Receiver<GuestFrame>,
    /// `None` once the guest has ended or been stopped.
    pub(super) guest: Option<GuestFuture>,
    pub(super) next_id: u64,
    pub(super) limits: Limits,
    pub(super) image: ImageKind,
    /// The guest's stdout and stderr descriptors, kept while a request streams.
    pub(super) tap: Tap,
    /// CPU time the guest has used on the host's threads (its start included).
    pub(super) cpu: Duration,
}

impl Instance {
    /// The image this instance started from.
    pub fn image(&self) -> ImageKind {
        self.image
    }

    /// CPU time the guest has used so far, measured on the threads that polled it (its
    /// start included): a request's share is the difference across it.
    pub fn cpu_used(&self) -> Duration {
        self.cpu
    }

    /// Whether the guest can still take calls.
    pub fn is_alive(&self) -> bool {
        self.guest.is_some()
    }

    /// Calls `function(*args, **kwargs)` in the tool. `args` must be a JSON array and
    /// `kwargs` a JSON object (the HTTP layer checks both).
    pub async fn call(&mut self, function: &str, args: &RawValue, kwargs: &RawValue) -> Outcome {
        let op = Op::Call {
            function: function.to_owned(),
            args: args.to_owned(),
            kwargs: kwargs.to_owned(),
        };
        self.run(&op).await
    }

    /// Runs one request in the tool under the call limits, refusing host calls.
    pub async fn run(&mut self, op: &Op) -> Outcome {
        self.run_with(op, &NoHost).await
    }

    /// Runs one request in the tool under the call limits; host calls the guest makes on
    /// the way are answered by `host`, within the request's deadline.
    pub async fn run_with(&mut self, op: &Op, host: &dyn HostCalls) -> Outcome {
        self.run_opts(
            op,
            &RunOptions {
                host,
                within: None,
                debug: None,
                stream: None,
            },
        )
        .await
    }

    /// Runs one request with [`RunOptions`].
    pub async fn run_opts(&mut self, op: &Op, options: &RunOptions<'_>) -> Outcome {
        let Some(sink) = options.stream else {
            return self.run_request(op, options).await;
        };
        self.tap.open(self.limits.output_bytes);
        let outcome = self.run_request(op, options).await;
        self.tap.drain(sink, true);
        self.tap.close();
        outcome
    }

    async fn run_request(&mut self, op: &Op, options: &RunOptions<'_>) -> Outcome {
        let RunOptions {
            host,
            within,
            debug,
            stream,
        } = *options;
        let started = Instant::now();
        let id = self.next_id;
        self.next_id += 1;
        let request = Request {
            v: protocol::PROTOCOL_VERSION,
            id,
            op,
            output_cap: self.limits.output_bytes,
            debug: debug.filter(|d| d.is_on()),
            stream: stream.is_some(),
        };
        let frame = match serde_json::to_vec(&request) {
            Ok(frame) => frame,
            Err(err) => {
                return self.faulted(
                    Fault::Protocol(format!("request not encodable: {err}")),
                    started,
                );
            }
        };
        let allowed = within.map_or(self.limits.deadline(), |w| w.min(self.limits.deadline()));
        let deadline = started + allowed;
        let delivery = Delivery {
            frame,
            fuel: self.limits.fuel,
            deadline,
        };
        if self.to_guest.try_send(ToGuest::Request(delivery)).is_err() {
            let fault = self.stopped_with().await;
            return self.faulted(fault, started);
        }
        let mut host_calls = 0u32;
        let mut memory_capped = false;
        loop {
            let frame = match self.receive(deadline, stream).await {
                Received::Frame(frame) => frame,
                Received::Fault(fault) => return self.faulted(fault, started),
            };
            memory_capped |= frame.memory_capped;
            let response: Response = match serde_json::from_slice(&frame.frame) {
                Ok(response) => response,
                Err(err) => {
                    return self.faulted(Fault::Protocol(format!("bad frame: {err}")), started);
                }
            };
            if response.v != protocol::PROTOCOL_VERSION || response.id != id {
                return self.faulted(Fault::Protocol("frame for another request".into()), started);
            }
            let Some(call) = &response.host else {
                return self.answer(response, frame.fuel_used, memory_capped, started);
            };
            host_calls += 1;
            let reply = if host_calls > host::MAX_HOST_CALLS {
                Err(format!(
                    "more than {} host calls in one request",
                    host::MAX_HOST_CALLS
                ))
            } else {
                match HostRequest::parse(call.get()) {
                    Err(err) => Err(format!("bad host call: {err}")),
                    Ok(call) => {
                        let until = tokio::time::Instant::from_std(deadline);
                        match tokio::time::timeout_at(until, host.handle(call)).await {
                            Ok(reply) => reply,
                            Err(_) => return self.faulted(Fault::DeadlineExceeded, started),
                        }
                    }
                }
            };
            let reply = ToGuest::Reply(host::reply_frame(&reply));
            if self.to_guest.try_send(reply).is_err() {
                let fault = self.stopped_with().await;
                return self.faulted(fault, started);
            }
        }
    }

    /// Looks at the idle guest's linear memory from the host: its size, and whether `needle`
    /// occurs in it. `None` if the guest is not alive or does not answer within ten seconds.
    pub async fn inspect_memory(&mut self, needle: Vec<u8>) -> Option<MemoryReport> {
        let (reply, report) = tokio::sync::oneshot::channel();
        self.to_guest
            .try_send(ToGuest::Inspect(Inspection { needle, reply }))
            .ok()?;
        let running = self.guest.as_mut()?;
        tokio::select! {
            biased;
            report = report => report.ok(),
            _ = running => {
                self.guest = None;
                None
            }
            () = tokio::time::sleep(Duration::from_secs(10)) => None,
        }
    }

    fn faulted(&mut self, fault: Fault, started: Instant) -> Outcome {
        self.stop();
        Outcome::Faulted {
            fault,
            elapsed: started.elapsed(),
        }
    }

    fn answer(
        &mut self,
        response: Response,
        fuel_used: u64,
        memory_capped: bool,
        started: Instant,
    ) -> Outcome {
        let elapsed = started.elapsed();
        // The driver enforces the output cap, but it shares its interpreter with the tool:
        // the host checks again and treats a frame past the cap as tampering.
        let output = response.stdout.len().saturating_add(response.stderr.len());
        if output as u64 > self.limits.output_bytes {
            return self.faulted(Fault::OutputLimit, started);
        }
        let error = match (response.ok, response.error) {
            (true, _) => None,
            (false, Some(error)) => Some(error),
            (false, None) => Some(GuestError {
                kind: GuestErrorKind::BadRequest,
                exc_type: None,
                message: "the driver reported an unnamed failure".into(),
                traceback: None,
            }),
        };
        Outcome::Answered {
            result: if error.is_none() {
                response.result
            } else {
                None
            },
            error,
            stdout: response.stdout,
            stderr: response.stderr,
            fuel_used,
            elapsed,
            memory_capped,
            debug: response.debug,
        }
    }

    /// The first frame: `ready`, or the import's failure.
    pub(super) fn check_ready(&mut self, frame: &[u8]) -> Result<(), SpawnError> {
        let response: Response = serde_json::from_slice(frame).map_err(|err| {
            SpawnError::Faulted(Fault::Protocol(format!("bad ready frame: {err}")))
        })?;
        if response.v != protocol::PROTOCOL_VERSION || response.id != 0 {
            return Err(SpawnError::Faulted(Fault::Protocol(
                "bad ready frame".into(),
            )));
        }
        match (response.ok, response.error) {
            (true, _) => Ok(()),
            (false, Some(error)) => Err(SpawnError::LoadFailed(error)),
            (false, None) => Err(SpawnError::Faulted(Fault::Protocol(
                "no ready frame".into(),
            ))),
        }
    }

    /// The guest's next frame, or why it stopped. Polls the guest inline until it hands out a
    /// frame, ends, or passes `deadline` (plus a grace for the epoch callback to act), in
    /// which case the host stops it. With a `stream`, the tap is drained into it every
    /// [`FLUSH_EVERY`] meanwhile (a computing guest yields once per epoch tick).
    pub(super) async fn receive(
        &mut self,
        deadline: Instant,
        stream: Option<&OutputSink>,
    ) -> Received {
        let sleep =
            tokio::time::sleep_until(tokio::time::Instant::from_std(deadline + DEADLINE_GRACE));
        tokio::pin!(sleep);
        let mut flush = stream.map(|_| {
            let mut every = tokio::time::interval(FLUSH_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            every
        });
        let Self {
            from_guest,
            guest,
            tap,
            cpu,
            ..
        } = self;
        loop {
            let Some(running) = guest.as_mut() else {
                return Received::Fault(Fault::Trapped("the instance was already stopped".into()));
            };
            tokio::select! {
                biased;
                frame = from_guest.recv() => {
                    if let Some(frame) = frame {
                        return Received::Frame(frame);
                    }
                }
                ended = (Timed { inner: running, spent: &mut *cpu }) => {
                    *guest = None;
                    return Received::Fault(ended_with(ended));
                }
                () = &mut sleep => {
                    *guest = None;
                    return Received::Fault(Fault::DeadlineExceeded);
                }
                () = tick(&mut flush), if stream.is_some() => {
                    if let Some(sink) = stream {
                        tap.drain(sink, false);
                    }
                }
            }
        }
    }

    fn stop(&mut self) {
        self.guest = None;
    }

    /// Runs a guest that stopped taking requests to its end, and names why it ended.
    async fn stopped_with(&mut self) -> Fault {
        let Some(running) = self.guest.take() else {
            return Fault::Trapped("the instance was already stopped".into());
        };
        match tokio::time::timeout(Duration::from_secs(1), running).await {
            Ok(ended) => ended_with(ended),
            Err(_) => Fault::Protocol("the guest stopped taking requests".into()),
        }
    }
}

/// The next tick of `every`; never, without one.
async fn tick(every: &mut Option<tokio::time::Interval>) {
    match every {
        Some(every) => {
            every.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The guest future, adding the time each poll takes to `spent`: the guest runs inside the
/// poll (it is polled inline, never on a thread of its own), so this is the time it held a
/// host thread. Measured with the monotonic clock (vDSO, ~25 ns a read) rather than the
/// thread's CPU clock (a system call, ~0.5 µs: two per poll cost a warm call 10%); it counts
/// time the thread was preempted mid-poll too.
struct Timed<'a> {
    inner: &'a mut GuestFuture,
    spent: &'a mut Duration,
}

impl Future for Timed<'_> {
    type Output = wasmtime::Result<i32>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let before = Instant::now();
        let polled = self.inner.as_mut().poll(cx);
        *self.spent += before.elapsed();
        polled
    }
}
