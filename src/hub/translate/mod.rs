//! Other APIs in front of the OpenAI-speaking participants: each submodule turns its dialect's
//! request into an OpenAI one and the OpenAI answer back into its dialect, streaming included.
//! What they share is here: the bounds, reading the upstream's SSE events, and [`Translation`],
//! the [`BodyStream`] that drives a dialect's [`Translator`] over the relay's decoded body; the
//! proxy does the routing, relaying and metrics as for `/v1`.

pub mod anthropic;
pub mod ollama;

use std::collections::VecDeque;
use std::io;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde_json::Value;

use crate::http::BodyStream;

/// Largest answer document translated (a non-streamed answer).
pub(crate) const MAX_DOCUMENT: usize = 16 * 1024 * 1024;
/// Longest line of a streamed answer.
pub(crate) const MAX_LINE: usize = 1024 * 1024;
/// Most bytes of an error answer kept (its message is what the client gets).
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;
/// Upstream reads a translator takes in a row without yielding anything before it lets the
/// connection look at its client (a participant streaming nothing useful, fast, must not keep
/// a departed client's request running).
pub(crate) const READS_BEFORE_YIELD: u32 = 16;

/// One dialect's answer translator: fed the upstream's decoded body, it queues what the client
/// gets.
pub(crate) trait Translator: Send + 'static {
    /// More of the upstream body. `Err` ends the answer (a bound was passed).
    fn feed(&mut self, data: &[u8]) -> io::Result<()>;
    /// The upstream body ended.
    fn end(&mut self);
    /// What is ready for the client, in order.
    fn ready(&mut self) -> &mut VecDeque<Bytes>;
}

/// A [`Translator`] over an upstream body: what the client's connection writes.
pub(crate) struct Translation<S, T> {
    inner: S,
    translator: T,
    ended: bool,
    /// Upstream reads since the last output.
    quiet_reads: u32,
}

impl<S: BodyStream, T: Translator> Translation<S, T> {
    pub(crate) fn new(inner: S, translator: T) -> Self {
        Translation {
            inner,
            translator,
            ended: false,
            quiet_reads: 0,
        }
    }
}

impl<S: BodyStream, T: Translator> BodyStream for Translation<S, T> {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if let Some(b) = self.translator.ready().pop_front() {
                return Poll::Ready(Some(Ok(b)));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match self.inner.poll_next(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    if let Err(e) = self.translator.feed(&data) {
                        self.ended = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    if !self.translator.ready().is_empty() {
                        self.quiet_reads = 0;
                        continue;
                    }
                    self.quiet_reads += 1;
                    if self.quiet_reads >= READS_BEFORE_YIELD {
                        // Let the connection see whether its client is still there.
                        self.quiet_reads = 0;
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    self.translator.end();
                    self.ended = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Keep a document's bytes: a success's up to [`MAX_DOCUMENT`] (past it, the answer fails), an
/// error's up to [`MAX_ERROR_BODY`] (the rest is dropped: its message is what is kept).
pub(crate) fn document_feed(buf: &mut Vec<u8>, data: &[u8], status: u16) -> io::Result<()> {
    if !(200..300).contains(&status) {
        let room = MAX_ERROR_BODY.saturating_sub(buf.len());
        buf.extend_from_slice(&data[..data.len().min(room)]);
        return Ok(());
    }
    buf.extend_from_slice(data);
    if buf.len() > MAX_DOCUMENT {
        return Err(io::Error::other("answer too large to translate"));
    }
    Ok(())
}

/// Add `data` to the partial line in `buf` and hand each complete line to `each`; past
/// [`MAX_LINE`] without a line end, the answer fails.
pub(crate) fn sse_feed(
    buf: &mut Vec<u8>,
    data: &[u8],
    mut each: impl FnMut(&[u8]),
) -> io::Result<()> {
    buf.extend_from_slice(data);
    let mut start = 0;
    while let Some(end) = memchr::memchr(b'\n', &buf[start..]) {
        each(&buf[start..start + end + 1]);
        start += end + 1;
    }
    buf.drain(..start);
    if buf.len() > MAX_LINE {
        return Err(io::Error::other("streamed event too large to translate"));
    }
    Ok(())
}

/// The JSON of an SSE `data:` line; `None` for other lines, `[DONE]`, and data that is not
/// JSON.
pub(crate) fn sse_data(line: &[u8]) -> Option<Value> {
    let data = line.trim_ascii().strip_prefix(b"data:")?.trim_ascii();
    if data == b"[DONE]" {
        return None;
    }
    serde_json::from_slice(data).ok()
}

/// `(prompt_tokens, completion_tokens)` of an OpenAI `usage`.
pub(crate) fn usage(u: &Value) -> (u64, u64) {
    (
        u["prompt_tokens"].as_u64().unwrap_or(0),
        u["completion_tokens"].as_u64().unwrap_or(0),
    )
}

/// For tests, fuzzing and benches: a fixed list of reads, as the relay would yield them.
pub(crate) struct Reads(pub(crate) VecDeque<Bytes>);

impl Reads {
    pub(crate) fn of<B: Into<Bytes>>(reads: impl IntoIterator<Item = B>) -> Reads {
        Reads(reads.into_iter().map(Into::into).collect())
    }
}

impl BodyStream for Reads {
    fn poll_next(&mut self, _: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// For tests, fuzzing and benches: everything a body over ready reads yields, and the error
/// it ended with, if any (a translation yields now and then: polled again).
pub(crate) fn drain(body: &mut impl BodyStream) -> (Vec<u8>, Option<io::Error>) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut out = Vec::new();
    loop {
        match body.poll_next(&mut cx) {
            Poll::Ready(Some(Ok(b))) => out.extend_from_slice(&b),
            Poll::Ready(Some(Err(e))) => return (out, Some(e)),
            Poll::Ready(None) => return (out, None),
            Poll::Pending => {}
        }
    }
}
