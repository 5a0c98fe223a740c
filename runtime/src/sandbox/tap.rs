//! The output tap: the guest's file-descriptor stdout and stderr, which the driver writes a
//! streamed request's `print()` output to as it happens (a request that is not streamed
//! writes nothing there, and whatever tool code writes to the descriptors itself is
//! discarded as before).
//!
//! While a request streams, the tap keeps what the guest writes, up to the request's output
//! cap over both streams (past it bytes are dropped: the driver's own cap check ends the call
//! at that point anyway); the instance drains it every [`FLUSH_EVERY`] into the request's
//! [`OutputSink`], split at character boundaries into chunks of at most [`MAX_CHUNK`] bytes.
//! The buffer lives on the host, so a chunk goes out on time even while the guest computes
//! silently after writing it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How often a streamed request's output is handed on (half the 50 ms a client may wait).
pub const FLUSH_EVERY: Duration = Duration::from_millis(25);

/// The largest chunk of text one [`Output`] carries.
pub const MAX_CHUNK: usize = 16 << 10;

/// Which stream a chunk was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        }
    }
}

/// A chunk of a streamed request's output, in the order the guest wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stream: Stream,
    pub text: String,
}

/// Where a streamed request's output goes. Unbounded, but what one request can put in it is
/// bounded by its output cap.
pub type OutputSink = mpsc::UnboundedSender<Output>;

#[derive(Default)]
struct State {
    /// Bytes the current request may still write; 0 while no request streams.
    room: u64,
    /// Written and not yet handed on, in order, with the stream of each run.
    pending: Vec<(Stream, Vec<u8>)>,
}

/// The tap of one instance: its two descriptors share it.
#[derive(Clone, Default)]
pub struct Tap(Arc<Mutex<State>>);

impl Tap {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// A request starts streaming with `cap` bytes of room.
    pub(super) fn open(&self, cap: u64) {
        let mut state = self.lock();
        state.room = cap;
        state.pending.clear();
    }

    /// The request ended: nothing more is kept.
    pub(super) fn close(&self) {
        let mut state = self.lock();
        state.room = 0;
        state.pending.clear();
    }

    /// Hands what was written on to `sink`, keeping an unfinished UTF-8 character for the
    /// next drain unless `last`.
    pub(super) fn drain(&self, sink: &OutputSink, last: bool) {
        let pending = {
            let mut state = self.lock();
            if state.pending.is_empty() {
                return;
            }
            let mut pending = std::mem::take(&mut state.pending);
            if !last && let Some((stream, bytes)) = pending.last_mut() {
                let cut = complete_prefix(bytes);
                if cut < bytes.len() {
                    let tail = bytes.split_off(cut);
                    state.pending.push((*stream, tail));
                }
            }
            pending
        };
        for (stream, bytes) in pending {
            for text in chunks(&String::from_utf8_lossy(&bytes)) {
                let _ = sink.send(Output {
                    stream,
                    text: text.to_owned(),
                });
            }
        }
    }

    fn write(&self, stream: Stream, bytes: &[u8]) {
        let mut state = self.lock();
        let keep = bytes
            .len()
            .min(usize::try_from(state.room).unwrap_or(usize::MAX));
        if keep == 0 {
            return;
        }
        state.room -= keep as u64;
        match state.pending.last_mut() {
            Some((last, run)) if *last == stream => run.extend_from_slice(&bytes[..keep]),
            _ => state.pending.push((stream, bytes[..keep].to_vec())),
        }
    }

    /// The descriptor for `stream`, for the instance's WASI context.
    pub(super) fn descriptor(&self, stream: Stream) -> Descriptor {
        Descriptor {
            tap: self.clone(),
            stream,
        }
    }
}

/// The length of the longest prefix of `bytes` that does not end inside a UTF-8 character.
fn complete_prefix(bytes: &[u8]) -> usize {
    // A character is at most 4 bytes: look back at most 3 for the start of the last one.
    for back in 1..=bytes.len().min(4) {
        let at = bytes.len() - back;
        let byte = bytes[at];
        if byte & 0xC0 != 0x80 {
            let width = match byte {
                0x00..=0x7F => 1,
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            return if back >= width { bytes.len() } else { at };
        }
    }
    bytes.len()
}

/// `text` cut at character boundaries into pieces of at most [`MAX_CHUNK`] bytes.
fn chunks(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while rest.len() > MAX_CHUNK {
        let mut cut = MAX_CHUNK;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

/// The guest's stdout or stderr: writes go to the tap (or nowhere), always at once.
#[derive(Clone)]
pub(super) struct Descriptor {
    tap: Tap,
    stream: Stream,
}

impl IsTerminal for Descriptor {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Descriptor {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Descriptor {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.tap.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Never full: what passes the room is dropped, not waited for.
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Descriptor {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Descriptor {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.tap.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drained(tap: &Tap, last: bool) -> Vec<Output> {
        let (sink, mut rx) = mpsc::unbounded_channel();
        tap.drain(&sink, last);
        drop(sink);
        let mut out = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            out.push(chunk);
        }
        out
    }

    #[test]
    fn nothing_is_kept_while_closed() {
        let tap = Tap::default();
        tap.write(Stream::Stdout, b"lost");
        assert!(drained(&tap, true).is_empty());
    }

    #[test]
    fn order_and_streams_are_kept_and_the_room_holds() {
        let tap = Tap::default();
        tap.open(10);
        tap.write(Stream::Stdout, b"ab");
        tap.write(Stream::Stdout, b"c");
        tap.write(Stream::Stderr, b"de");
        tap.write(Stream::Stdout, b"fghijkl");
        let out = drained(&tap, true);
        let texts: Vec<_> = out.iter().map(|o| (o.stream, o.text.as_str())).collect();
        assert_eq!(
            texts,
            [
                (Stream::Stdout, "abc"),
                (Stream::Stderr, "de"),
                (Stream::Stdout, "fghij"),
            ]
        );
    }

    #[test]
    fn a_split_character_waits_for_its_rest() {
        let tap = Tap::default();
        tap.open(100);
        let snowman = "☃".as_bytes();
        tap.write(Stream::Stdout, &[b'x', snowman[0], snowman[1]]);
        let first = drained(&tap, false);
        assert_eq!(first[0].text, "x");
        tap.write(Stream::Stdout, &snowman[2..]);
        assert_eq!(drained(&tap, false)[0].text, "☃");
    }

    #[test]
    fn long_text_is_cut_into_bounded_chunks() {
        let text = "é".repeat(MAX_CHUNK);
        let pieces = chunks(&text);
        assert!(pieces.iter().all(|p| p.len() <= MAX_CHUNK));
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn complete_prefix_of_whole_and_cut_characters() {
        assert_eq!(complete_prefix(b"abc"), 3);
        assert_eq!(complete_prefix("a☃".as_bytes()), 4);
        assert_eq!(complete_prefix(&"a☃".as_bytes()[..3]), 1);
        assert_eq!(complete_prefix(&[]), 0);
    }
}
