//! A room's event stream, typed. [`EventStream`] connects to `GET /rooms/:code/events`, decodes
//! the SSE frames into [`HubEvent`]s, and when the connection drops it reconnects by itself
//! with `Last-Event-ID`, so the hub replays what was missed (or says `resync`). It is both an
//! async iterator (`next().await`) and a `futures_core::Stream`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::{ClientError, HubClient};
use crate::http::body::{BodyFraming, ChunkedDecoder};
use crate::http::client::read_head;
use crate::http::upstream::Upstream;
use crate::types::event::{self as ev, Kind};
use crate::types::{LlmMetrics, ParticipantInfo, RoomInfo};

/// Longest event accepted (bytes of `data:`); a longer one ends the connection.
pub const MAX_EVENT: usize = 1024 * 1024;
/// Delay before the first reconnect; doubles up to `RECONNECT_MAX`.
pub const RECONNECT_MIN: Duration = Duration::from_millis(250);
pub const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// One event of a room.
#[derive(Clone, Debug, PartialEq)]
pub enum HubEvent {
    Connected {
        client_id: String,
    },
    RoomCreated(RoomInfo),
    /// A room was deleted by its host (when it is this stream's room, the stream ends).
    RoomDeleted {
        room_id: String,
        code: String,
    },
    ParticipantJoined(Box<ParticipantInfo>),
    /// A participant changed its entry (its models, which are loaded, its nickname…): the
    /// whole new entry.
    ParticipantUpdated(Box<ParticipantInfo>),
    ParticipantLeft {
        participant_id: String,
    },
    ParticipantOffline {
        participant_id: String,
    },
    ParticipantOnline {
        participant_id: String,
    },
    LlmRequest {
        participant_id: String,
        /// The model the participant serves (what runs).
        model: String,
        /// What the client asked for (`*`, `model:x`, an id); `None` from older hubs, whose
        /// `model` was this.
        requested: Option<String>,
    },
    LlmComplete {
        participant_id: String,
        model: String,
        requested: Option<String>,
        metrics: LlmMetrics,
    },
    LlmError {
        participant_id: String,
        error: String,
    },
    /// A request waits in the room's queue (every participant that could take it is full).
    LlmQueued {
        /// The client's salted hash.
        client: String,
        model: String,
        position: usize,
        depth: usize,
    },
    /// A request left the room's queue (`outcome`: served, timeout, abandoned, refused).
    LlmDequeued {
        client: String,
        model: String,
        outcome: String,
        waited_ms: u64,
        depth: usize,
    },
    /// The hub could not replay everything missed: refetch the room's state.
    Resync {
        reason: String,
    },
    /// The connection dropped; the stream is reconnecting (not from the hub).
    Disconnected {
        error: String,
    },
    /// An event this version does not know.
    Unknown {
        event: String,
        data: String,
    },
}

impl HubEvent {
    /// Decode one SSE event (`event:` name and `data:` text).
    pub fn decode(event: &str, data: &str) -> HubEvent {
        fn p<'a, T: serde::Deserialize<'a>>(data: &'a str) -> Option<T> {
            serde_json::from_str(data).ok()
        }
        let owned = |c: std::borrow::Cow<'_, str>| c.into_owned();
        let decoded = match Kind::from_name(event) {
            Some(Kind::Connected) => p::<ev::Connected>(data).map(|d| HubEvent::Connected {
                client_id: owned(d.client_id),
            }),
            Some(Kind::Resync) => p::<ev::Resync>(data).map(|d| HubEvent::Resync {
                reason: owned(d.reason),
            }),
            Some(Kind::RoomCreated) => p(data).map(HubEvent::RoomCreated),
            Some(Kind::RoomDeleted) => p::<ev::RoomDeleted>(data).map(|d| HubEvent::RoomDeleted {
                room_id: owned(d.room_id),
                code: owned(d.code),
            }),
            Some(Kind::ParticipantJoined) => {
                p(data).map(|p| HubEvent::ParticipantJoined(Box::new(p)))
            }
            Some(Kind::ParticipantUpdated) => {
                p(data).map(|p| HubEvent::ParticipantUpdated(Box::new(p)))
            }
            Some(Kind::ParticipantLeft) => {
                p::<ev::ParticipantRef>(data).map(|d| HubEvent::ParticipantLeft {
                    participant_id: owned(d.participant_id),
                })
            }
            Some(Kind::ParticipantOffline) => {
                p::<ev::ParticipantRef>(data).map(|d| HubEvent::ParticipantOffline {
                    participant_id: owned(d.participant_id),
                })
            }
            Some(Kind::ParticipantOnline) => {
                p::<ev::ParticipantRef>(data).map(|d| HubEvent::ParticipantOnline {
                    participant_id: owned(d.participant_id),
                })
            }
            // The seed's `model` is what the client asked for; the model that runs is
            // `servedModel` (hubs before it sent only `model`, which was that).
            Some(Kind::LlmRequest) => p::<ev::LlmRequest>(data).map(|d| match d.served_model {
                Some(served) => HubEvent::LlmRequest {
                    participant_id: owned(d.participant_id),
                    model: owned(served),
                    requested: Some(owned(d.model)),
                },
                None => HubEvent::LlmRequest {
                    participant_id: owned(d.participant_id),
                    model: owned(d.model),
                    requested: None,
                },
            }),
            Some(Kind::LlmComplete) => p::<ev::LlmComplete>(data).map(|d| HubEvent::LlmComplete {
                participant_id: owned(d.participant_id),
                model: owned(d.model),
                requested: d.requested.map(owned),
                metrics: d.metrics,
            }),
            Some(Kind::LlmError) => p::<ev::LlmError>(data).map(|d| HubEvent::LlmError {
                participant_id: owned(d.participant_id),
                error: owned(d.error),
            }),
            Some(Kind::LlmQueued) => p::<ev::LlmQueued>(data).map(|d| HubEvent::LlmQueued {
                client: owned(d.client),
                model: owned(d.model),
                position: d.position,
                depth: d.depth,
            }),
            Some(Kind::LlmDequeued) => p::<ev::LlmDequeued>(data).map(|d| HubEvent::LlmDequeued {
                client: owned(d.client),
                model: owned(d.model),
                outcome: owned(d.outcome),
                waited_ms: d.waited_ms,
                depth: d.depth,
            }),
            None => None,
        };
        decoded.unwrap_or_else(|| HubEvent::Unknown {
            event: event.to_string(),
            data: data.to_string(),
        })
    }
}

/// An event with the id the hub gave it (none for `connected`, `resync` and local events).
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    pub id: Option<u64>,
    pub event: HubEvent,
}

struct Live {
    conn: Upstream,
    buf: BytesMut,
    chunked: Option<ChunkedDecoder>,
    /// De-chunked text not yet split into events.
    text: Vec<u8>,
}

/// The `Stream` implementation's pending `next()`: it owns the stream state while it runs.
type NextFuture =
    Pin<Box<dyn Future<Output = (EventStream, Option<Result<Received, ClientError>>)> + Send>>;

/// The subscription. See the module docs.
pub struct EventStream {
    hub: HubClient,
    code: String,
    last_id: Option<u64>,
    live: Option<Live>,
    backoff: Duration,
    pending: std::collections::VecDeque<Received>,
    /// The `Stream` implementation's in-flight `next()`.
    fut: Option<NextFuture>,
}

impl HubClient {
    /// Subscribe to a room's events. `last_id` resumes after an event seen earlier.
    pub async fn subscribe(
        &self,
        code: &str,
        last_id: Option<u64>,
    ) -> Result<EventStream, ClientError> {
        let mut s = EventStream {
            hub: self.clone(),
            code: code.to_string(),
            last_id,
            live: None,
            backoff: RECONNECT_MIN,
            pending: Default::default(),
            fut: None,
        };
        s.connect().await?;
        Ok(s)
    }
}

impl EventStream {
    /// The id of the last event received (what a reconnect resumes from).
    pub fn last_event_id(&self) -> Option<u64> {
        self.last_id
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let target = &self.hub.target;
        let mut conn = self
            .hub
            .connector
            .connect_fresh(target)
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let last = self
            .last_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "GET {}/rooms/{}/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nUser-Agent: gambiarra/{}\r\n{}{last}\r\n",
            target.base_path,
            super::enc(&self.code),
            target.authority,
            env!("CARGO_PKG_VERSION"),
            self.hub.password_header(),
        );
        crate::http::write_all_vectored(&mut conn, &[head.as_bytes()])
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let mut buf = BytesMut::with_capacity(8192);
        let head = tokio::time::timeout(super::CALL_TIMEOUT, read_head(&mut conn, &mut buf))
            .await
            .map_err(|_| ClientError::Unreachable("timed out".into()))?
            .map_err(|e| super::answer_error(e, "connection closed before an answer"))?;
        if head.status != 200 {
            // Read the (small) error body for the hub's message.
            let mut body = buf.to_vec();
            let whole = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                if whole {
                    return;
                }
                let mut tmp = [0u8; 4096];
                while body.len() < 65536 {
                    match conn.read(&mut tmp).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => body.extend_from_slice(&tmp[..n]),
                    }
                    if serde_json::from_slice::<serde_json::Value>(&body).is_ok() {
                        break;
                    }
                }
            })
            .await;
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("status {}", head.status));
            return Err(ClientError::Hub {
                status: head.status,
                message,
            });
        }
        self.live = Some(Live {
            conn,
            buf,
            chunked: (head.framing == BodyFraming::Chunked).then(ChunkedDecoder::new),
            text: Vec::new(),
        });
        self.backoff = RECONNECT_MIN;
        Ok(())
    }

    /// The next event. `None` never comes from a live hub: a dropped connection yields
    /// `Disconnected` and is reconnected; an error is returned when a reconnect is refused
    /// (the room is gone).
    pub async fn next(&mut self) -> Option<Result<Received, ClientError>> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(Ok(r));
            }
            if self.live.is_none() {
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(RECONNECT_MAX);
                match self.connect().await {
                    Ok(()) => continue,
                    Err(e @ ClientError::Hub { .. }) => return Some(Err(e)),
                    Err(_) => continue,
                }
            }
            match self.read_some().await {
                Ok(()) => {}
                Err(error) => {
                    self.live = None;
                    return Some(Ok(Received {
                        id: None,
                        event: HubEvent::Disconnected { error },
                    }));
                }
            }
        }
    }

    /// Read from the connection and queue every complete event.
    /// Decode what is buffered; read more only when that yields no whole event. (A buffer
    /// that holds only part of a chunk-size line decodes to nothing: it must be read into, not
    /// decoded again — that would spin.)
    async fn read_some(&mut self) -> Result<(), String> {
        loop {
            let live = self.live.as_mut().ok_or("not connected")?;
            match live.chunked.as_mut() {
                Some(dec) => {
                    let text = &mut live.text;
                    let p = dec
                        .feed(&live.buf, |d| text.extend_from_slice(d))
                        .map_err(|e| e.to_string())?;
                    let _ = live.buf.split_to(p.consumed);
                    if p.done {
                        live.buf.clear();
                        self.split_events();
                        return Err("the hub ended the stream".into());
                    }
                }
                None => {
                    live.text.extend_from_slice(&live.buf);
                    live.buf.clear();
                }
            }
            if live.text.len() > MAX_EVENT {
                return Err("event too large".into());
            }
            self.split_events();
            if !self.pending.is_empty() {
                return Ok(());
            }
            let live = self.live.as_mut().ok_or("not connected")?;
            let n = live
                .conn
                .read_buf(&mut live.buf)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the hub closed the stream".into());
            }
        }
    }

    fn split_events(&mut self) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        while let Some(end) = live.text.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = live.text.drain(..end + 2).collect();
            let block = String::from_utf8_lossy(&block);
            let (mut id, mut name, mut data) = (None, String::from("message"), String::new());
            let mut comment = true;
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                comment = false;
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = value.parse().ok(),
                    "event" => name = value.to_string(),
                    "data" => {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(value);
                    }
                    _ => {}
                }
            }
            if comment {
                continue;
            }
            if id.is_some() {
                self.last_id = id;
            }
            self.pending.push_back(Received {
                id,
                event: HubEvent::decode(&name, &data),
            });
        }
    }
}

impl futures_core::Stream for EventStream {
    type Item = Result<Received, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.fut.is_none() {
            // Move the state into a future that owns it, and take it back when it is done.
            let mut owned = EventStream {
                hub: this.hub.clone(),
                code: std::mem::take(&mut this.code),
                last_id: this.last_id,
                live: this.live.take(),
                backoff: this.backoff,
                pending: std::mem::take(&mut this.pending),
                fut: None,
            };
            this.fut = Some(Box::pin(async move {
                let r = owned.next().await;
                (owned, r)
            }));
        }
        let fut = this.fut.as_mut().map(|f| f.as_mut().poll(cx));
        match fut {
            Some(Poll::Ready((owned, r))) => {
                this.fut = None;
                this.code = owned.code;
                this.last_id = owned.last_id;
                this.live = owned.live;
                this.backoff = owned.backoff;
                this.pending = owned.pending;
                Poll::Ready(r)
            }
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_event() {
        assert_eq!(
            HubEvent::decode("participant:left", r#"{"participantId":"a"}"#),
            HubEvent::ParticipantLeft {
                participant_id: "a".into()
            }
        );
        assert!(matches!(
            HubEvent::decode(
                "llm:complete",
                r#"{"participantId":"a","model":"*","metrics":{"tokens":3,"latencyFirstTokenMs":1,"durationMs":9,"tokensPerSecond":2.5}}"#
            ),
            HubEvent::LlmComplete {
                metrics: LlmMetrics { tokens: 3, .. },
                ..
            }
        ));
        assert!(matches!(
            HubEvent::decode("future:thing", "{}"),
            HubEvent::Unknown { .. }
        ));
        assert!(matches!(
            HubEvent::decode("participant:left", "not json"),
            HubEvent::Unknown { .. }
        ));
    }
}
