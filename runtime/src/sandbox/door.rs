//! The door: the interpreter's one custom import, `host.call(ptr, len, out_ptr_ptr,
//! out_len_ptr) -> i32`, through which the driver hands over a response frame and receives
//! the next request frame in the same call.
//!
//! While the guest waits in the door no wasm runs, so no fuel burns and no deadline is armed.
//! When a request is delivered, the call's fuel budget and deadline are armed: the fuel is set
//! both before `host_alloc` runs (so the allocator cannot starve) and again by the store's call
//! hook on `ReturningFromHost`, so the call starts with exactly its budget.

use std::time::Instant;

use tokio::sync::mpsc;
use wasmtime::{AsContext, AsContextMut, CallHook, Caller, StoreContextMut};

use super::GuestState;

/// Door return values the interpreter understands (see the interpreter's `_host` module).
pub const DOOR_OK: i32 = 0;
pub const DOOR_FAULT: i32 = -2;

/// A request on its way into the guest, with the budget it runs under.
#[derive(Debug)]
pub struct Delivery {
    pub frame: Vec<u8>,
    pub fuel: u64,
    pub deadline: Instant,
}

/// What the host sends into a guest waiting in the door.
#[derive(Debug)]
pub enum ToGuest {
    /// The next request: the door returns it to the driver.
    Request(Delivery),
    /// The answer to the host call the guest is waiting on: the door returns it, and the
    /// request carries on with the fuel and deadline it had.
    Reply(Vec<u8>),
    /// A look at the parked guest's linear memory; the guest keeps waiting afterwards.
    Inspect(Inspection),
}

/// A question about the guest's linear memory, answered while it waits in the door.
#[derive(Debug)]
pub struct Inspection {
    /// Bytes to search the whole linear memory for.
    pub needle: Vec<u8>,
    pub reply: tokio::sync::oneshot::Sender<MemoryReport>,
}

/// The answer to an [`Inspection`].
#[derive(Debug, Clone, Copy)]
pub struct MemoryReport {
    /// The size of linear memory in bytes.
    pub linear_bytes: usize,
    /// Whether the needle occurs anywhere in it (always `false` for an empty needle).
    pub contains: bool,
}

/// A frame the guest handed out, with the fuel the request used.
#[derive(Debug)]
pub struct GuestFrame {
    pub frame: Vec<u8>,
    pub fuel_used: u64,
    /// A memory growth was refused since the last frame.
    pub memory_capped: bool,
}

/// The guest's end of the door, kept in the store.
pub struct DoorState {
    pub to_host: mpsc::Sender<GuestFrame>,
    pub from_host: mpsc::Receiver<ToGuest>,
    /// The largest frame the guest may hand out; past it the instance is stopped.
    pub max_frame: usize,
    /// The fuel the current request started with.
    pub budget: u64,
    /// Fuel to set when control returns to wasm (armed when a request is delivered).
    pub refuel: Option<u64>,
    /// The current request's deadline; `None` while the guest waits in the door.
    pub deadline: Option<Instant>,
    /// While the guest waits in the door: the fuel it had left and its request's deadline,
    /// restored if the wait was a host call.
    pub parked: (u64, Option<Instant>),
}

/// The guest handed out a frame larger than its cap: the call's output passed its limit.
#[derive(Debug, thiserror::Error)]
#[error("guest frame of {size} bytes exceeds the cap of {cap} bytes")]
pub struct FrameTooLarge {
    pub size: usize,
    pub cap: usize,
}

/// The instance's owner went away; the guest is stopped.
#[derive(Debug, thiserror::Error)]
#[error("the instance was closed")]
pub struct Closed;

/// The store's call hook: applies the armed fuel when the door returns to wasm.
pub fn call_hook(
    mut store: StoreContextMut<'_, GuestState>,
    hook: CallHook,
) -> wasmtime::Result<()> {
    if matches!(hook, CallHook::ReturningFromHost)
        && let Some(fuel) = store.data_mut().door.refuel.take()
    {
        store.set_fuel(fuel)?;
    }
    Ok(())
}

/// The host function behind `host.call`.
pub async fn call(
    mut caller: Caller<'_, GuestState>,
    (ptr, len, out_ptr_ptr, out_len_ptr): (i32, i32, i32, i32),
) -> wasmtime::Result<i32> {
    let Some(memory) = caller.get_export("memory").and_then(|e| e.into_memory()) else {
        return Ok(DOOR_FAULT);
    };
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let cap = caller.data().door.max_frame;
    if len > cap {
        return Err(FrameTooLarge { size: len, cap }.into());
    }
    let mut frame = vec![0u8; len];
    if memory.read(&caller, ptr, &mut frame).is_err() {
        return Ok(DOOR_FAULT);
    }
    let remaining = caller.get_fuel().unwrap_or(0);
    let memory_capped = std::mem::take(&mut caller.data_mut().limits.hit);
    let door = &mut caller.data_mut().door;
    let fuel_used = door.budget.saturating_sub(remaining);
    door.parked = (remaining, door.deadline.take());
    if door
        .to_host
        .send(GuestFrame {
            frame,
            fuel_used,
            memory_capped,
        })
        .await
        .is_err()
    {
        return Err(Closed.into());
    }
    loop {
        match caller.data_mut().door.from_host.recv().await {
            None => return Err(Closed.into()),
            Some(ToGuest::Request(delivery)) => {
                return deliver(&mut caller, &memory, delivery, out_ptr_ptr, out_len_ptr).await;
            }
            Some(ToGuest::Reply(frame)) => {
                return resume(&mut caller, &memory, &frame, out_ptr_ptr, out_len_ptr).await;
            }
            Some(ToGuest::Inspect(inspection)) => inspect(&caller, &memory, inspection),
        }
    }
}

fn inspect(caller: &Caller<'_, GuestState>, memory: &wasmtime::Memory, inspection: Inspection) {
    let data = memory.data(caller);
    let needle = &inspection.needle;
    let contains = !needle.is_empty() && memchr::memmem::find(data, needle).is_some();
    let _ = inspection.reply.send(MemoryReport {
        linear_bytes: data.len(),
        contains,
    });
}

/// Hands a request to the driver and arms its budget.
async fn deliver(
    caller: &mut Caller<'_, GuestState>,
    memory: &wasmtime::Memory,
    delivery: Delivery,
    out_ptr_ptr: i32,
    out_len_ptr: i32,
) -> wasmtime::Result<i32> {
    caller.set_fuel(delivery.fuel)?;
    let status = hand_over(caller, memory, &delivery.frame, out_ptr_ptr, out_len_ptr).await?;
    if status != DOOR_OK {
        return Ok(status);
    }
    caller.set_fuel(delivery.fuel)?;
    let door = &mut caller.data_mut().door;
    door.budget = delivery.fuel;
    door.refuel = Some(delivery.fuel);
    door.deadline = Some(delivery.deadline);
    Ok(DOOR_OK)
}

/// Hands a host call's answer to the guest, which carries on with the fuel and deadline it
/// had (the copy itself costs the guest no fuel).
async fn resume(
    caller: &mut Caller<'_, GuestState>,
    memory: &wasmtime::Memory,
    frame: &[u8],
    out_ptr_ptr: i32,
    out_len_ptr: i32,
) -> wasmtime::Result<i32> {
    let (fuel, deadline) = caller.data().door.parked;
    caller.set_fuel(fuel)?;
    let status = hand_over(caller, memory, frame, out_ptr_ptr, out_len_ptr).await?;
    caller.set_fuel(fuel)?;
    let door = &mut caller.data_mut().door;
    door.refuel = Some(fuel);
    door.deadline = deadline;
    Ok(status)
}

/// Copies `frame` into guest memory (allocated by the guest's `host_alloc`) and writes its
/// address and length where the guest asked.
async fn hand_over(
    caller: &mut Caller<'_, GuestState>,
    memory: &wasmtime::Memory,
    frame: &[u8],
    out_ptr_ptr: i32,
    out_len_ptr: i32,
) -> wasmtime::Result<i32> {
    let Some(alloc) = caller.get_export("host_alloc").and_then(|e| e.into_func()) else {
        return Ok(DOOR_FAULT);
    };
    let alloc = alloc.typed::<i32, i32>(caller.as_context())?;
    let Ok(len) = i32::try_from(frame.len()) else {
        return Ok(DOOR_FAULT);
    };
    let at = alloc.call_async(caller.as_context_mut(), len).await? as u32 as usize;
    if at == 0 {
        return Ok(DOOR_FAULT);
    }
    let wrote = memory
        .write(caller.as_context_mut(), at, frame)
        .and_then(|()| {
            memory.write(
                caller.as_context_mut(),
                out_ptr_ptr as u32 as usize,
                &(at as u32).to_le_bytes(),
            )
        })
        .and_then(|()| {
            memory.write(
                caller.as_context_mut(),
                out_len_ptr as u32 as usize,
                &(len as u32).to_le_bytes(),
            )
        });
    Ok(if wrote.is_ok() { DOOR_OK } else { DOOR_FAULT })
}
