//! One client connection: a read buffer, a write buffer and the keep-alive loop.
//!
//! Requests are parsed from the read buffer in order; responses to pipelined requests are
//! gathered in the write buffer and flushed together before the connection waits on its socket
//! again, so a burst of pipelined requests costs one write. A whole body is written with its
//! head in one vectored write. A streamed body is pumped chunk by chunk while the client's side
//! of the socket is watched, so a client that goes away ends the stream (and whatever feeds it)
//! at once.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep, sleep, timeout_at};

use super::body::{BodyFraming, CRLF, ChunkHeader, ChunkedDecoder, LAST_CHUNK};
use super::head::{HeadError, MAX_HEAD_BYTES, Method, RequestHead, parse_request};
use super::limits::{BodyBudget, ConnSlot, ServerConfig};
use super::response::{Body, BodyStream, Header, Response, WireFraming, encode_head};
use super::service::{Handler, Peer, Request, shutdown_signalled};

/// Whole bodies up to this size are copied into the write buffer beside their head (one small
/// write); larger ones go out as their own slice of a vectored write.
const COALESCE_BODY_MAX: usize = 16 * 1024;
/// Pipelined responses are gathered up to this many bytes before being flushed.
const WRITE_BATCH_MAX: usize = 64 * 1024;
/// While a response streams, at most this many bytes of the client's next requests are read
/// ahead; past it the socket is left unread until the stream ends.
const STREAM_READ_AHEAD_MAX: usize = MAX_HEAD_BYTES;
/// A connection working through a long pipelined burst yields to other tasks this often.
const YIELD_EVERY: u64 = 32;
/// After refusing a request whose body it will not read, the connection discards what the
/// client still sends for at most this long…
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(1);
/// …and at most this many bytes, then closes.
const LINGER_BYTES: usize = 256 * 1024;

enum ReadFail {
    /// The head was refused: answer with its status, then close.
    Head(HeadError),
    /// The head (or body) did not arrive in time.
    Timeout,
    /// The body was larger than allowed.
    TooLarge,
    /// The server's memory for request bodies is taken up by others.
    Busy,
    /// The body's chunked framing was broken.
    BadBody(&'static str),
    /// The peer went away or the socket failed: just close.
    Gone,
}

pub(crate) struct Connection<S> {
    io: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    config: Arc<ServerConfig>,
    served: u64,
    /// This connection's place within the server's bounds (moves with an upgraded socket).
    slot: Option<ConnSlot>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection<S> {
    pub(crate) fn new(io: S, config: Arc<ServerConfig>, slot: ConnSlot) -> Self {
        Connection {
            io,
            // Empty to start: a head is read through a scratch buffer on the stack and kept
            // in an allocation of its own size (`read_sized`), and the write buffer grows to
            // what is written. An idle connection holds neither.
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            config,
            served: 0,
            slot: Some(slot),
        }
    }

    /// Serve requests until the client closes, a bound is hit, or the server shuts down.
    pub(crate) async fn run<H: Handler>(
        mut self,
        handler: Arc<H>,
        peer: Peer,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let head = match self.read_head(&mut shutdown).await {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(fail) => {
                    self.fail(fail).await;
                    break;
                }
            };
            let is_head = head.method == Method::Head;
            let http10 = head.minor_version == 0;
            let wants_keep_alive = head.keep_alive;
            // Route, room and credentials are decided from the head: nothing of a body is
            // read (nor `100 Continue` sent) for a request that will be refused.
            let (admitted, limit) = match handler.admit(&head, &peer).await {
                Ok(a) => a,
                Err(resp) => {
                    let bodiless = head.framing == BodyFraming::Empty;
                    let keep_alive =
                        bodiless && wants_keep_alive && !resp.close && !*shutdown.borrow();
                    match self.write_response(resp, keep_alive, is_head, http10).await {
                        Ok(true) if keep_alive => continue,
                        Ok(_) if !bodiless => {
                            self.linger_close().await;
                            return;
                        }
                        _ => break,
                    }
                }
            };
            let mut budget = BodyBudget::new(self.config.stats.clone(), peer.addr.ip());
            if let BodyFraming::Length(n) = head.framing {
                if n > limit as u64 {
                    self.fail(ReadFail::TooLarge).await;
                    break;
                }
                if !budget.grow(n as usize, self.config.body_memory) {
                    self.fail(ReadFail::Busy).await;
                    break;
                }
            }
            if head.expect_continue && head.framing != BodyFraming::Empty {
                self.wbuf
                    .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                if self.flush().await.is_err() {
                    break;
                }
            }
            let body = match self.read_body(head.framing, limit, &mut budget).await {
                Ok(b) => b,
                Err(fail) => {
                    self.fail(fail).await;
                    break;
                }
            };
            self.served += 1;
            if self.served.is_multiple_of(YIELD_EVERY) {
                tokio::task::yield_now().await;
            }
            let req = Request {
                head,
                body,
                budget: Some(budget),
            };
            // On the heap, and only while it runs: the handler's state (a proxied request's is
            // kilobytes) is not carried by every connection, idle or streaming, for its life
            // (measured: a plain connection's task is 1.9 KB instead of 4.4 KB).
            let handling = Box::pin(handler.handle(req, admitted, &peer));
            let rbuf = &mut self.rbuf;
            let io = &mut self.io;
            // While the answer is being prepared (a participant loading its model), watch the
            // client: if it leaves, the handler is dropped and whatever it waited on with it.
            let mut resp = tokio::select! {
                biased;
                resp = handling => resp,
                () = poll_fn(|cx| if client_gone(cx, rbuf, io) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }) => break,
            };
            if let Body::Upgrade(_) = resp.body {
                let Body::Upgrade(on_upgrade) = std::mem::replace(&mut resp.body, Body::Empty)
                else {
                    unreachable!("matched just above")
                };
                self.upgrade(resp, on_upgrade).await;
                return;
            }
            let keep_alive = wants_keep_alive && !resp.close && !*shutdown.borrow();
            match self.write_response(resp, keep_alive, is_head, http10).await {
                Ok(true) if keep_alive => {}
                _ => break,
            }
        }
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
    }

    /// Send the `101` head, then hand the socket (and whatever the client already sent after
    /// its request) over.
    async fn upgrade(mut self, resp: Response, on_upgrade: super::response::OnUpgrade) {
        super::response::encode_head(
            &mut self.wbuf,
            resp.status,
            &resp.headers,
            &[],
            WireFraming::Length(0),
            false,
        );
        if self.flush().await.is_err() {
            return;
        }
        on_upgrade(super::response::Upgraded {
            io: Box::new(self.io),
            read_ahead: self.rbuf.split().freeze(),
            slot: self.slot.take(),
        });
    }

    /// Answer a request that could not be read, with the connection to be closed after.
    async fn fail(&mut self, fail: ReadFail) {
        let resp = match fail {
            ReadFail::Head(e) => Response::json_error(e.status(), e.message()),
            ReadFail::Timeout => Response::json_error(408, "Request timeout"),
            ReadFail::TooLarge => Response::json_error(413, "Request body too large"),
            ReadFail::Busy => Response::json_error(
                503,
                "Server is busy receiving other request bodies, try again later",
            )
            .header("Retry-After", bytes::Bytes::from_static(b"1")),
            ReadFail::BadBody(m) => Response::json_error(400, m),
            ReadFail::Gone => return,
        };
        let _ = self.write_response(resp, false, false, false).await;
    }

    fn write_deadline(&self) -> Instant {
        Instant::now() + self.config.write_timeout
    }

    /// Most writes go straight into the socket buffer: write what goes without waiting, and
    /// without arming a timer. Returns the bytes written. (A no-op waker is fine: when the
    /// socket is full, the timed write in `flush` polls again with the task's waker.)
    fn write_now(&mut self) -> io::Result<usize> {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut done = 0;
        while done < self.wbuf.len() {
            match Pin::new(&mut self.io).poll_write(&mut cx, &self.wbuf[done..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => done += n,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        Ok(done)
    }

    /// Write out everything in the write buffer.
    async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let done = match self.write_now() {
            Ok(n) => n,
            Err(e) => {
                self.wbuf.clear();
                return Err(e);
            }
        };
        let res = if done < self.wbuf.len() {
            let deadline = self.write_deadline();
            match timeout_at(deadline, self.io.write_all(&self.wbuf[done..])).await {
                Ok(r) => r,
                Err(_) => Err(io::ErrorKind::TimedOut.into()),
            }
        } else {
            Ok(())
        };
        self.wbuf.clear();
        res
    }

    /// Read and parse the next request head. `Ok(None)`: close quietly (EOF between requests,
    /// idle timeout, shutdown while idle).
    async fn read_head(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<RequestHead>, ReadFail> {
        // The first request of a connection must start within the head timeout; later ones
        // within the idle timeout. Once a head has started, it must finish within the head
        // timeout of its first byte.
        let mut deadline = None;
        loop {
            if !self.rbuf.is_empty() {
                match parse_request(&self.rbuf) {
                    Ok(Some(parts)) => {
                        let raw = self.rbuf.split_to(parts.len).freeze();
                        return Ok(Some(parts.freeze(raw)));
                    }
                    Ok(None) => {}
                    Err(e) => return Err(ReadFail::Head(e)),
                }
                if deadline.is_none() {
                    deadline = Some(Instant::now() + self.config.head_timeout);
                }
            }
            if self.flush().await.is_err() {
                return Err(ReadFail::Gone);
            }
            let idle = self.rbuf.is_empty();
            let until = match deadline {
                Some(d) => d,
                None if self.served == 0 => Instant::now() + self.config.head_timeout,
                None => Instant::now() + self.config.idle_timeout,
            };
            if idle && *shutdown.borrow() {
                return Ok(None);
            }
            let n = tokio::select! {
                r = timeout_at(until, read_sized(&mut self.io, &mut self.rbuf)) => match r {
                    Ok(Ok(n)) => n,
                    Ok(Err(_)) => return Err(ReadFail::Gone),
                    Err(_) if idle => return Ok(None),
                    Err(_) => return Err(ReadFail::Timeout),
                },
                _ = shutdown_signalled(shutdown), if idle => return Ok(None),
            };
            if n == 0 {
                return if self.rbuf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadFail::Gone)
                };
            }
        }
    }

    /// Close after an answer while the client may still be sending a body nobody will read:
    /// stop writing, then discard what arrives for a moment (bounded in time and bytes), so
    /// the close does not reset the connection before the client has read the answer.
    async fn linger_close(&mut self) {
        let _ = self.flush().await;
        let _ = self.io.shutdown().await;
        let mut left = LINGER_BYTES;
        // Discarded through the read buffer: a buffer on the stack here would be part of every
        // connection's task, lingering or not.
        let (io, rbuf) = (&mut self.io, &mut self.rbuf);
        let _ = tokio::time::timeout(LINGER_TIME, async {
            while left > 0 {
                rbuf.clear();
                rbuf.reserve(4096);
                match io.read_buf(rbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
        self.rbuf.clear();
    }

    /// Read more body bytes; each read must arrive within the body timeout, and all of them
    /// before `whole` (the body deadline).
    async fn read_more(&mut self, whole: Instant) -> Result<(), ReadFail> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        let deadline = whole.min(Instant::now() + self.config.body_timeout);
        match timeout_at(deadline, self.io.read_buf(&mut self.rbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Err(ReadFail::Gone),
            Ok(Ok(_)) => Ok(()),
            Err(_) => Err(ReadFail::Timeout),
        }
    }

    async fn read_body(
        &mut self,
        framing: BodyFraming,
        limit: usize,
        budget: &mut BodyBudget,
    ) -> Result<Bytes, ReadFail> {
        // The deadline for the whole body, read from the clock only if a read must wait (a
        // small body usually came with its head).
        let body_deadline = self.config.body_deadline;
        let mut whole = None;
        let mut deadline = move || *whole.get_or_insert_with(|| Instant::now() + body_deadline);
        let max_memory = self.config.body_memory;
        match framing {
            BodyFraming::Empty | BodyFraming::UntilClose => Ok(Bytes::new()),
            BodyFraming::Length(n) => {
                // `n <= limit` was checked by the caller, so this fits in memory.
                let n = n as usize;
                if self.rbuf.len() < n {
                    self.rbuf.reserve(n - self.rbuf.len());
                }
                while self.rbuf.len() < n {
                    self.read_more(deadline()).await?;
                }
                Ok(self.rbuf.split_to(n).freeze())
            }
            BodyFraming::Chunked => {
                let mut decoder = ChunkedDecoder::new();
                let mut body = BytesMut::new();
                loop {
                    let mut over = None;
                    let progress = decoder
                        .feed(&self.rbuf, |data| {
                            if over.is_some() {
                            } else if body.len() + data.len() > limit {
                                over = Some(ReadFail::TooLarge);
                            } else if !budget.grow(data.len(), max_memory) {
                                over = Some(ReadFail::Busy);
                            } else {
                                body.extend_from_slice(data);
                            }
                        })
                        .map_err(|_| ReadFail::BadBody("Malformed chunked body"))?;
                    if let Some(fail) = over {
                        return Err(fail);
                    }
                    self.rbuf.advance(progress.consumed);
                    if progress.done {
                        return Ok(body.freeze());
                    }
                    self.read_more(deadline()).await?;
                }
            }
        }
    }

    /// Write one response. Returns whether the connection can carry another request.
    async fn write_response(
        &mut self,
        resp: Response,
        keep_alive: bool,
        is_head: bool,
        http10: bool,
    ) -> io::Result<bool> {
        let extra = &self.config.default_headers;
        match resp.body {
            Body::Empty | Body::Full(_) => {
                let body = match resp.body {
                    Body::Full(b) => b,
                    _ => Bytes::new(),
                };
                encode_head(
                    &mut self.wbuf,
                    resp.status,
                    &resp.headers,
                    extra,
                    WireFraming::Length(body.len() as u64),
                    keep_alive,
                );
                let no_body = is_head || resp.status == 204 || resp.status == 304;
                if no_body || body.is_empty() {
                } else if body.len() <= COALESCE_BODY_MAX {
                    self.wbuf.extend_from_slice(&body);
                } else {
                    self.write_vectored_all(&[&body]).await?;
                    return Ok(true);
                }
                // Flushed before the connection next waits on its socket (see `read_head`), so
                // pipelined responses leave together.
                if !keep_alive || self.wbuf.len() >= WRITE_BATCH_MAX {
                    self.flush().await?;
                }
                Ok(true)
            }
            Body::Stream(mut stream) => {
                // We frame each piece as a chunk (or, for HTTP/1.0, end the body by closing).
                let framing = if http10 {
                    WireFraming::Close
                } else {
                    WireFraming::Chunked
                };
                let chunked = framing == WireFraming::Chunked;
                let keep_alive = keep_alive && chunked;
                let head = (resp.status, resp.headers, framing, keep_alive, is_head);
                match self.send_streamed(head, stream.as_mut(), chunked).await? {
                    None => Ok(keep_alive),
                    Some(PumpEnd::Finished) if chunked => {
                        drop(stream);
                        self.wbuf.extend_from_slice(LAST_CHUNK);
                        self.flush().await?;
                        Ok(keep_alive)
                    }
                    Some(_) => Ok(false),
                }
            }
            // Handled in `run` before a response gets here.
            Body::Upgrade(_) => Ok(false),
            Body::Raw { length, mut stream } => {
                let framing = match length {
                    Some(n) => WireFraming::Length(n),
                    None => WireFraming::Chunked,
                };
                let head = (resp.status, resp.headers, framing, keep_alive, is_head);
                // The bytes carry their own framing: the connection stays usable only if the
                // stream delivered all of it.
                match self.send_streamed(head, stream.as_mut(), false).await? {
                    None => Ok(keep_alive),
                    Some(end) => Ok(keep_alive && end == PumpEnd::Finished),
                }
            }
        }
    }

    /// Write a head and then stream `body` (its first piece with the head when ready). `None`
    /// for a HEAD request, which gets the head only.
    async fn send_streamed(
        &mut self,
        (status, headers, framing, keep_alive, is_head): (
            u16,
            Vec<Header>,
            WireFraming,
            bool,
            bool,
        ),
        body: &mut dyn BodyStream,
        chunk_frame: bool,
    ) -> io::Result<Option<PumpEnd>> {
        let extra = &self.config.default_headers;
        encode_head(&mut self.wbuf, status, &headers, extra, framing, keep_alive);
        // Encoded: not kept for the stream's life.
        drop(headers);
        if is_head {
            self.flush().await?;
            return Ok(None);
        }
        Ok(Some(match self.first_piece(body, chunk_frame).await? {
            Started::Ended(end) => end,
            Started::Flowing(pending) => {
                self.shed_buffers();
                self.pump(body, chunk_frame, pending).await
            }
        }))
    }

    /// Give back the buffers while a stream runs (an event stream can last for hours): the
    /// pump writes chunks from their own bytes and reads only what the client sends ahead,
    /// so an empty buffer is memory held for nothing. They are allocated again when needed.
    fn shed_buffers(&mut self) {
        if self.wbuf.is_empty() {
            self.wbuf = BytesMut::new();
        }
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
    }

    /// Send the buffered head together with the body's first piece when that piece is ready
    /// already (a small upstream answer usually arrives with its head): one write instead of
    /// two. `Some(end)` if the body ended (or failed) right there.
    async fn first_piece(
        &mut self,
        body: &mut dyn BodyStream,
        chunk_frame: bool,
    ) -> io::Result<Started> {
        // Polling with a no-op waker is only a peek: if the body is not ready, `pump` polls it
        // again with the task's real waker.
        let peek = |body: &mut dyn BodyStream| {
            body.poll_next(&mut std::task::Context::from_waker(std::task::Waker::noop()))
        };
        match peek(body) {
            Poll::Ready(Some(Ok(data))) if !data.is_empty() => {
                let out = OutChunk::new(data, chunk_frame);
                if out.total() <= COALESCE_BODY_MAX {
                    for part in out.parts() {
                        self.wbuf.extend_from_slice(part);
                    }
                    self.flush().await?;
                } else {
                    let parts = out.parts();
                    self.write_vectored_all(&parts).await?;
                }
                // A body of one piece (a whole answer that came in one read) is usually over
                // now: seeing it here keeps the connection's buffers for its next request,
                // where the pump would give them back to allocate them again (two allocations
                // and a reallocation per request, perf with malloc uprobes).
                match peek(body) {
                    Poll::Ready(None) => Ok(Started::Ended(PumpEnd::Finished)),
                    Poll::Ready(Some(Err(_))) => Ok(Started::Ended(PumpEnd::Failed)),
                    // The pump sends it first. (An empty piece carries nothing, and framed
                    // would end the body.)
                    Poll::Ready(Some(Ok(more))) if !more.is_empty() => {
                        Ok(Started::Flowing(OutChunk::new(more, chunk_frame)))
                    }
                    Poll::Ready(Some(Ok(_))) | Poll::Pending => Ok(Started::flowing()),
                }
            }
            Poll::Ready(None) => {
                self.flush().await?;
                Ok(Started::Ended(PumpEnd::Finished))
            }
            Poll::Ready(Some(Err(_))) => {
                self.flush().await?;
                Ok(Started::Ended(PumpEnd::Failed))
            }
            _ => {
                self.flush().await?;
                Ok(Started::flowing())
            }
        }
    }

    /// Write the write buffer followed by `parts` with vectored writes.
    async fn write_vectored_all(&mut self, parts: &[&[u8]]) -> io::Result<()> {
        let head = std::mem::take(&mut self.wbuf);
        let mut segs: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        segs.push(&head);
        segs.extend_from_slice(parts);
        // Not `within` (no clock read when the socket takes it all at once): in the
        // connection's own task its larger future cost every connection ~120 bytes (an idle
        // subscriber 2,807 -> 2,927 B), more than the clock read is worth.
        let deadline = self.write_deadline();
        let res = timeout_at(deadline, write_all_vectored(&mut self.io, &segs)).await;
        // Keep the allocation for the next response.
        self.wbuf = head;
        self.wbuf.clear();
        res.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Stream a body to the client until it ends, the client goes away, the stream is
    /// cancelled, or a write makes no progress for the write timeout.
    /// `out` is a piece to send before the body's next (or none).
    async fn pump(
        &mut self,
        body: &mut dyn BodyStream,
        chunk_frame: bool,
        mut out: OutChunk,
    ) -> PumpEnd {
        // Armed only while a write is blocked (a client not reading).
        let mut stall: Option<Pin<Box<Sleep>>> = None;
        let write_timeout = self.config.write_timeout;
        let io = &mut self.io;
        let rbuf = &mut self.rbuf;
        // Watch the client while waiting (`client_gone`). (While the body flows, a closed
        // client shows as a failed write.)
        poll_fn(|cx| {
            loop {
                if body.poll_cancelled(cx).is_ready() {
                    return Poll::Ready(PumpEnd::Cancelled);
                }
                if !out.is_empty() {
                    let mut slices = [IoSlice::new(&[]); 3];
                    let n = out.slices(&mut slices);
                    match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..n]) {
                        Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                            return Poll::Ready(PumpEnd::ClientGone);
                        }
                        Poll::Ready(Ok(written)) => {
                            out.advance(written);
                            stall = None;
                            continue;
                        }
                        Poll::Pending => {
                            let timer = stall.get_or_insert_with(|| Box::pin(sleep(write_timeout)));
                            if timer.as_mut().poll(cx).is_ready() {
                                return Poll::Ready(PumpEnd::Stalled);
                            }
                            if client_gone(cx, rbuf, io) {
                                return Poll::Ready(PumpEnd::ClientGone);
                            }
                            return Poll::Pending;
                        }
                    }
                }
                match body.poll_next(cx) {
                    Poll::Ready(Some(Ok(data))) if data.is_empty() => continue,
                    Poll::Ready(Some(Ok(data))) => {
                        out = OutChunk::new(data, chunk_frame);
                    }
                    Poll::Ready(Some(Err(_))) => return Poll::Ready(PumpEnd::Failed),
                    Poll::Ready(None) => return Poll::Ready(PumpEnd::Finished),
                    Poll::Pending => {
                        if client_gone(cx, rbuf, io) {
                            return Poll::Ready(PumpEnd::ClientGone);
                        }
                        return Poll::Pending;
                    }
                }
            }
        })
        .await
    }
}

/// Read what the socket has into `buf`, allocating only what arrived: when `buf` has no room,
/// the read goes to a scratch buffer on the stack (it lives only during the poll, not in the
/// connection's task) and is copied. A connection waiting for its next request holds no
/// buffer; a head of 300 bytes takes 300.
fn read_sized<'a, S: AsyncRead + Unpin>(
    io: &'a mut S,
    buf: &'a mut BytesMut,
) -> impl Future<Output = io::Result<usize>> + 'a {
    poll_fn(move |cx| {
        if buf.capacity() - buf.len() >= READ_SCRATCH {
            return tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf);
        }
        // Uninitialised: zeroing 4 KiB per read was measurable per request (`ReadBuf` tracks
        // what the read filled, and only that is looked at).
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); READ_SCRATCH];
        let mut rb = ReadBuf::uninit(&mut scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                buf.extend_from_slice(rb.filled());
                Poll::Ready(Ok(rb.filled().len()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// The stack buffer a head is read through.
const READ_SCRATCH: usize = 4096;

/// Whether the client has gone (EOF or a failed read), reading what it sends meanwhile (its
/// next pipelined requests) into `rbuf`, up to [`STREAM_READ_AHEAD_MAX`]; past that the
/// socket is left unread and this cannot tell. Registers `cx` to be woken when it can.
fn client_gone<S: AsyncRead + Unpin>(
    cx: &mut std::task::Context<'_>,
    rbuf: &mut BytesMut,
    io: &mut S,
) -> bool {
    loop {
        if rbuf.len() >= STREAM_READ_AHEAD_MAX {
            return false;
        }
        let mut scratch = [std::mem::MaybeUninit::<u8>::uninit(); 1024];
        let mut rb = ReadBuf::uninit(&mut scratch);
        match Pin::new(&mut *io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) if rb.filled().is_empty() => return true,
            Poll::Ready(Ok(())) => rbuf.extend_from_slice(rb.filled()),
            Poll::Ready(Err(_)) => return true,
            Poll::Pending => return false,
        }
    }
}

/// How a streamed body's start went ([`Connection::first_piece`]).
enum Started {
    /// The body ended (or failed) with its first piece.
    Ended(PumpEnd),
    /// It goes on; the pump sends this piece first (it may be empty).
    Flowing(OutChunk),
}

impl Started {
    fn flowing() -> Self {
        Started::Flowing(OutChunk::empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PumpEnd {
    Finished,
    /// The body's source failed: the response is truncated.
    Failed,
    ClientGone,
    Cancelled,
    Stalled,
}

/// One chunk on its way out: size line, data, CRLF — written with vectored writes from a cursor.
struct OutChunk {
    header: ChunkHeader,
    data: Bytes,
    framed: bool,
    /// Bytes of (header, data, trailer) already written.
    pos: usize,
}

impl OutChunk {
    fn empty() -> Self {
        OutChunk {
            header: ChunkHeader::new(0),
            data: Bytes::new(),
            framed: false,
            pos: 0,
        }
    }

    fn new(data: Bytes, framed: bool) -> Self {
        OutChunk {
            header: ChunkHeader::new(data.len()),
            data,
            framed,
            pos: 0,
        }
    }

    fn parts(&self) -> [&[u8]; 3] {
        if self.framed {
            [self.header.as_bytes(), &self.data, CRLF]
        } else {
            [&[], &self.data, &[]]
        }
    }

    fn total(&self) -> usize {
        self.parts().iter().map(|p| p.len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.total()
    }

    fn slices<'a>(&'a self, out: &mut [IoSlice<'a>; 3]) -> usize {
        let mut skip = self.pos;
        let mut n = 0;
        for part in self.parts() {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            out[n] = IoSlice::new(&part[skip..]);
            skip = 0;
            n += 1;
        }
        n
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
    }
}

/// `fut` under a time limit, with the clock read and the timer armed only if `fut` does not
/// finish at its first poll: most writes are taken whole by the socket at once, and a clock
/// read per write showed in perf.
pub(crate) async fn within<F: Future>(
    limit: std::time::Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(out) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        return Ok(out);
    }
    tokio::time::timeout(limit, fut).await
}

/// Most parts one vectored write takes (Linux takes 1024; a request has a handful).
const MAX_SLICES: usize = 16;

/// Write every byte of `parts`, using vectored writes. The slices are built on the stack in
/// each poll, not kept in the future: a connection's task holds this future while a write
/// waits, and an array of [`MAX_SLICES`] kept across that wait would be 256 bytes more in every
/// connection's task (measured: an idle event subscriber went from 2.8 to 3.1 KB).
pub(crate) async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &[&[u8]],
) -> io::Result<()> {
    let (mut idx, mut off) = (0, 0);
    poll_fn(|cx| {
        loop {
            while idx < parts.len() && off >= parts[idx].len() {
                idx += 1;
                off = 0;
            }
            if idx == parts.len() {
                return Poll::Ready(Ok(()));
            }
            // At most MAX_SLICES parts per write (a partial write continues with the next).
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            slices[0] = IoSlice::new(&parts[idx][off..]);
            let mut k = 1;
            for p in parts[idx + 1..].iter().take(MAX_SLICES - 1) {
                slices[k] = IoSlice::new(p);
                k += 1;
            }
            let mut n = match Pin::new(&mut *w).poll_write_vectored(cx, &slices[..k]) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
            };
            while n > 0 && idx < parts.len() {
                let left = parts[idx].len() - off;
                if n >= left {
                    n -= left;
                    idx += 1;
                    off = 0;
                } else {
                    off += n;
                    n = 0;
                }
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_chunk_cursor() {
        let mut c = OutChunk::new(Bytes::from_static(b"hello"), true);
        assert_eq!(c.total(), 3 + 5 + 2);
        {
            let mut s = [IoSlice::new(&[]); 3];
            assert_eq!(c.slices(&mut s), 3);
        }
        c.advance(4);
        {
            let mut s = [IoSlice::new(&[]); 3];
            assert_eq!(c.slices(&mut s), 2);
            assert_eq!(&*s[0], b"ello");
        }
        c.advance(6);
        assert!(c.is_empty());
        let c = OutChunk::new(Bytes::from_static(b"raw"), false);
        assert_eq!(c.total(), 3);
    }

    #[tokio::test]
    async fn vectored_writes_everything() {
        let mut out = Vec::new();
        write_all_vectored(&mut out, &[b"ab", b"", b"cde"])
            .await
            .unwrap();
        assert_eq!(out, b"abcde");
    }
}
