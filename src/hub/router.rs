//! Method + path → [`Route`], by hand: the path is split on `/` into at most a few segments and
//! matched against the table below. No regex, no allocation (except percent-decoding a
//! participant id that contains `%`).
//!
//! | method | path                                   | route            |
//! |--------|----------------------------------------|------------------|
//! | OPTIONS| any (a CORS preflight)                 | Preflight        |
//! | GET    | /                                      | Home (a page)    |
//! | GET    | /ui/:file                              | Asset            |
//! | GET    | /health                                | Health           |
//! | POST   | /rooms                                 | CreateRoom       |
//! | GET    | /rooms                                 | ListRooms        |
//! | GET    | /rooms/:code (HTML: the room's page)   | Room             |
//! | DELETE | /rooms/:code                           | DeleteRoom       |
//! | GET    | /rooms/:code/qr.svg                    | RoomQr           |
//! | POST   | /rooms/:code/join                      | Join             |
//! | DELETE | /rooms/:code/leave/:id                 | Leave            |
//! | POST   | /rooms/:code/health                    | HealthCheck      |
//! | GET    | /rooms/:code/participants              | Participants     |
//! | PATCH  | /rooms/:code/participants/:id          | Update           |
//! | GET    | /rooms/:code/models                    | Catalogue        |
//! | GET    | /rooms/:code/events                    | Events           |
//! | GET    | /rooms/:code/tunnel/:id (Upgrade)      | Tunnel           |
//! | GET    | /rooms/:code/v1/models                 | Models           |
//! | POST   | /rooms/:code/v1/chat/completions       | Proxy(Chat)      |
//! | POST   | /rooms/:code/v1/completions            | Proxy(Completions)|
//! | POST   | /rooms/:code/v1/embeddings             | Proxy(Embeddings)|
//! | POST   | /rooms/:code/v1/messages[/count_tokens] | Anthropic        |
//! | POST   | /rooms/:code/v1/responses              | Responses        |
//! | GET    | /rooms/:code/api/tags, /api/ps, /api/version | Ollama (catalogue) |
//! | POST   | /rooms/:code/api/show                  | Ollama(Show)     |
//! | POST   | /rooms/:code/api/chat, /api/generate, /api/embed, /api/embeddings | Ollama(Run) |

use std::borrow::Cow;

use crate::http::Method;
use crate::hub::metrics::RouteLabel;

/// The OpenAI-compatible operations the proxy relays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    Chat,
    Completions,
    Embeddings,
}

impl ProxyKind {
    /// The upstream path, appended to the participant's normalised endpoint.
    pub fn upstream_path(self) -> &'static str {
        match self {
            ProxyKind::Chat => "/v1/chat/completions",
            ProxyKind::Completions => "/v1/completions",
            ProxyKind::Embeddings => "/v1/embeddings",
        }
    }
}

/// What an Ollama-API request asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OllamaRoute {
    Tags,
    Ps,
    Version,
    Show,
    /// A generation or embedding, relayed (translated) to a participant.
    Run(crate::hub::translate::ollama::Op),
}

/// Where a request goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `OPTIONS` on any path: a browser's CORS preflight.
    Preflight,
    /// The hub's home page.
    Home,
    /// A file of the pages (`/ui/room.js`).
    Asset {
        name: &'a str,
    },
    Health,
    Metrics,
    CreateRoom,
    ListRooms,
    /// The room's page (a browser) or its public summary (JSON).
    Room {
        code: &'a str,
    },
    /// A QR code of the room page's URL.
    RoomQr {
        code: &'a str,
    },
    DeleteRoom {
        code: &'a str,
    },
    Join {
        code: &'a str,
    },
    Leave {
        code: &'a str,
        id: Cow<'a, str>,
    },
    HealthCheck {
        code: &'a str,
    },
    Participants {
        code: &'a str,
    },
    /// A participant changes its own entry.
    Update {
        code: &'a str,
        id: Cow<'a, str>,
    },
    /// The room's models, each with its participants.
    Catalogue {
        code: &'a str,
    },
    Events {
        code: &'a str,
    },
    Tunnel {
        code: &'a str,
        id: Cow<'a, str>,
    },
    Models {
        code: &'a str,
    },
    Proxy {
        code: &'a str,
        kind: ProxyKind,
    },
    /// Anthropic's Messages API on a room (`http://HUB/rooms/CODE` as an Anthropic base URL).
    Anthropic {
        code: &'a str,
        op: crate::hub::translate::anthropic::Op,
    },
    /// OpenAI's Responses API: passed through to participants that speak it.
    Responses {
        code: &'a str,
    },
    /// Ollama's API on a room (`http://HUB/rooms/CODE` as an Ollama host).
    Ollama {
        code: &'a str,
        op: OllamaRoute,
    },
    /// The path exists but not with this method; `allow` lists the methods that do.
    MethodNotAllowed {
        allow: &'static str,
    },
    NotFound,
}

impl Route<'_> {
    /// The route's label in `/metrics`.
    pub fn label(&self) -> RouteLabel {
        match self {
            Route::Preflight => RouteLabel::Preflight,
            Route::Home | Route::Asset { .. } | Route::RoomQr { .. } => RouteLabel::Page,
            Route::Room { .. } => RouteLabel::Room,
            Route::Health => RouteLabel::Health,
            Route::Metrics => RouteLabel::Metrics,
            Route::CreateRoom => RouteLabel::CreateRoom,
            Route::ListRooms => RouteLabel::ListRooms,
            Route::DeleteRoom { .. } => RouteLabel::DeleteRoom,
            Route::Join { .. } => RouteLabel::Join,
            Route::Leave { .. } => RouteLabel::Leave,
            Route::HealthCheck { .. } => RouteLabel::HealthCheck,
            Route::Participants { .. } => RouteLabel::Participants,
            Route::Update { .. } => RouteLabel::Update,
            Route::Catalogue { .. } => RouteLabel::Catalogue,
            Route::Events { .. } => RouteLabel::Events,
            Route::Tunnel { .. } => RouteLabel::Tunnel,
            Route::Models { .. } => RouteLabel::Models,
            Route::Proxy { .. } => RouteLabel::Proxy,
            Route::Ollama { .. } => RouteLabel::Ollama,
            Route::Anthropic { .. } => RouteLabel::Anthropic,
            Route::Responses { .. } => RouteLabel::Proxy,
            Route::MethodNotAllowed { .. } => RouteLabel::MethodNotAllowed,
            Route::NotFound => RouteLabel::NotFound,
        }
    }

    /// The room a route is about, for the ones inside a room.
    pub fn room_code(&self) -> Option<&str> {
        match self {
            Route::DeleteRoom { code }
            | Route::Room { code }
            | Route::RoomQr { code }
            | Route::Join { code }
            | Route::Leave { code, .. }
            | Route::HealthCheck { code }
            | Route::Participants { code }
            | Route::Update { code, .. }
            | Route::Catalogue { code }
            | Route::Events { code }
            | Route::Tunnel { code, .. }
            | Route::Models { code }
            | Route::Proxy { code, .. }
            | Route::Ollama { code, .. }
            | Route::Anthropic { code, .. }
            | Route::Responses { code } => Some(code),
            _ => None,
        }
    }

    /// `/v1` routes take large bodies and answer errors in OpenAI's shape.
    pub fn is_v1(&self) -> bool {
        matches!(
            self,
            Route::Models { .. } | Route::Proxy { .. } | Route::Responses { .. }
        )
    }

    /// A request relayed to a participant (any dialect): large bodies, no control-route rate,
    /// loop detection.
    pub fn is_relayed(&self) -> bool {
        matches!(
            self,
            Route::Proxy { .. }
                | Route::Responses { .. }
                | Route::Anthropic { .. }
                | Route::Ollama {
                    op: OllamaRoute::Run(_),
                    ..
                }
        )
    }
}

const MAX_SEGMENTS: usize = 6;

/// Match a request.
pub fn route(method: Method, path: &str) -> Route<'_> {
    let Some(rest) = path.strip_prefix('/') else {
        return Route::NotFound;
    };
    if rest.is_empty() {
        return match method {
            Method::Options => Route::Preflight,
            _ => gate(method, Method::Get, GET, Route::Home),
        };
    }
    // One trailing slash is tolerated: `/rooms/` is `/rooms`.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut segs = [""; MAX_SEGMENTS];
    let mut n = 0;
    for s in rest.split('/') {
        if n == MAX_SEGMENTS {
            return Route::NotFound;
        }
        segs[n] = s;
        n += 1;
    }
    let segs = &segs[..n];
    if segs.iter().any(|s| s.is_empty()) {
        return Route::NotFound;
    }
    use Method::*;
    if method == Options {
        return Route::Preflight;
    }
    match segs {
        ["health"] => gate(method, Get, GET, Route::Health),
        ["ui", name] => gate(method, Get, GET, Route::Asset { name }),
        ["metrics"] => gate(method, Get, GET, Route::Metrics),
        ["rooms"] => match method {
            Post => Route::CreateRoom,
            Get | Head => Route::ListRooms,
            _ => Route::MethodNotAllowed {
                allow: "GET, HEAD, POST",
            },
        },
        ["rooms", code] => match method {
            Get | Head => Route::Room { code },
            Delete => Route::DeleteRoom { code },
            _ => Route::MethodNotAllowed {
                allow: "GET, HEAD, DELETE",
            },
        },
        ["rooms", code, "qr.svg"] => gate(method, Get, GET, Route::RoomQr { code }),
        ["rooms", code, "join"] => gate(method, Post, "POST", Route::Join { code }),
        ["rooms", code, "leave", id] => match percent_decode(id) {
            Some(id) => gate(method, Delete, "DELETE", Route::Leave { code, id }),
            None => Route::NotFound,
        },
        ["rooms", code, "health"] => gate(method, Post, "POST", Route::HealthCheck { code }),
        ["rooms", code, "participants"] => gate(method, Get, GET, Route::Participants { code }),
        ["rooms", code, "participants", id] => match percent_decode(id) {
            Some(id) => gate(method, Patch, "PATCH", Route::Update { code, id }),
            None => Route::NotFound,
        },
        ["rooms", code, "models"] => gate(method, Get, GET, Route::Catalogue { code }),
        ["rooms", code, "events"] => gate(method, Get, GET, Route::Events { code }),
        ["rooms", code, "tunnel", id] => match percent_decode(id) {
            Some(id) => gate(method, Get, "GET", Route::Tunnel { code, id }),
            None => Route::NotFound,
        },
        ["rooms", code, "v1", "models"] => gate(method, Get, GET, Route::Models { code }),
        ["rooms", code, "v1", "responses"] => gate(method, Post, "POST", Route::Responses { code }),
        ["rooms", code, "v1", "messages"] => gate(
            method,
            Post,
            "POST",
            Route::Anthropic {
                code,
                op: crate::hub::translate::anthropic::Op::Messages,
            },
        ),
        ["rooms", code, "v1", "messages", "count_tokens"] => gate(
            method,
            Post,
            "POST",
            Route::Anthropic {
                code,
                op: crate::hub::translate::anthropic::Op::CountTokens,
            },
        ),
        ["rooms", code, "api", what] => {
            use crate::hub::translate::ollama::Op;
            let (want, allow, op) = match *what {
                "tags" => (Get, GET, OllamaRoute::Tags),
                "ps" => (Get, GET, OllamaRoute::Ps),
                "version" => (Get, GET, OllamaRoute::Version),
                "show" => (Post, "POST", OllamaRoute::Show),
                "chat" => (Post, "POST", OllamaRoute::Run(Op::Chat)),
                "generate" => (Post, "POST", OllamaRoute::Run(Op::Generate)),
                "embed" => (Post, "POST", OllamaRoute::Run(Op::Embed)),
                "embeddings" => (Post, "POST", OllamaRoute::Run(Op::Embeddings)),
                _ => return Route::NotFound,
            };
            gate(method, want, allow, Route::Ollama { code, op })
        }
        ["rooms", code, "v1", "chat", "completions"] => gate(
            method,
            Post,
            "POST",
            Route::Proxy {
                code,
                kind: ProxyKind::Chat,
            },
        ),
        ["rooms", code, "v1", "completions"] => gate(
            method,
            Post,
            "POST",
            Route::Proxy {
                code,
                kind: ProxyKind::Completions,
            },
        ),
        ["rooms", code, "v1", "embeddings"] => gate(
            method,
            Post,
            "POST",
            Route::Proxy {
                code,
                kind: ProxyKind::Embeddings,
            },
        ),
        _ => Route::NotFound,
    }
}

/// What a GET route allows: HEAD is GET without the body (the connection leaves it out).
const GET: &str = "GET, HEAD";

fn gate<'a>(method: Method, want: Method, allow: &'static str, r: Route<'a>) -> Route<'a> {
    if method == want || (want == Method::Get && method == Method::Head && allow == GET) {
        r
    } else {
        Route::MethodNotAllowed { allow }
    }
}

/// Decode `%XX` escapes in a path segment. `None` for a bad escape or a result that is not
/// UTF-8. Borrows when there is nothing to decode.
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3)?;
            let hi = (hex[0] as char).to_digit(16)?;
            let lo = (hex[1] as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(route(Method::Get, "/health"), Route::Health);
        assert_eq!(route(Method::Post, "/rooms"), Route::CreateRoom);
        assert_eq!(route(Method::Get, "/rooms/"), Route::ListRooms);
        assert_eq!(
            route(Method::Post, "/rooms/ABC234/join"),
            Route::Join { code: "ABC234" }
        );
        assert_eq!(
            route(Method::Delete, "/rooms/ABC234/leave/p%201"),
            Route::Leave {
                code: "ABC234",
                id: Cow::Owned("p 1".into())
            }
        );
        assert_eq!(
            route(Method::Post, "/rooms/x/v1/chat/completions"),
            Route::Proxy {
                code: "x",
                kind: ProxyKind::Chat
            }
        );
        assert!(route(Method::Get, "/rooms/x/v1/models").is_v1());
        assert_eq!(route(Method::Get, "/nope"), Route::NotFound);
        assert_eq!(route(Method::Get, "/"), Route::Home);
        assert_eq!(
            route(Method::Post, "/"),
            Route::MethodNotAllowed { allow: GET }
        );
        assert_eq!(
            route(Method::Get, "/ui/room.js"),
            Route::Asset { name: "room.js" }
        );
        assert_eq!(
            route(Method::Get, "/rooms/ABC234"),
            Route::Room { code: "ABC234" }
        );
        assert_eq!(
            route(Method::Delete, "/rooms/ABC234"),
            Route::DeleteRoom { code: "ABC234" }
        );
        assert_eq!(
            route(Method::Get, "/rooms/ABC234/qr.svg"),
            Route::RoomQr { code: "ABC234" }
        );
        assert_eq!(route(Method::Get, "//rooms"), Route::NotFound);
        assert_eq!(route(Method::Get, "rooms"), Route::NotFound);
        assert_eq!(route(Method::Get, "/a/b/c/d/e/f/g/h"), Route::NotFound);
        assert_eq!(
            route(Method::Put, "/rooms"),
            Route::MethodNotAllowed {
                allow: "GET, HEAD, POST"
            }
        );
        assert_eq!(
            route(Method::Get, "/rooms/x/join"),
            Route::MethodNotAllowed { allow: "POST" }
        );
        assert_eq!(route(Method::Delete, "/rooms/x/leave/%zz"), Route::NotFound);
        assert_eq!(
            route(Method::Patch, "/rooms/x/participants/a%2Fb"),
            Route::Update {
                code: "x",
                id: Cow::Owned("a/b".into())
            }
        );
        assert_eq!(
            route(Method::Get, "/rooms/x/participants/a"),
            Route::MethodNotAllowed { allow: "PATCH" }
        );
        assert_eq!(
            route(Method::Get, "/rooms/x/models"),
            Route::Catalogue { code: "x" }
        );
    }

    #[test]
    fn head_is_get_without_a_body() {
        use Method::*;
        assert_eq!(route(Head, "/health"), Route::Health);
        assert_eq!(route(Head, "/rooms"), Route::ListRooms);
        assert_eq!(
            route(Head, "/rooms/ABC234/participants"),
            Route::Participants { code: "ABC234" }
        );
        // Not where GET would switch protocols, and not on POST routes.
        assert!(matches!(
            route(Head, "/rooms/ABC234/tunnel/x"),
            Route::MethodNotAllowed { allow: "GET" }
        ));
        assert!(matches!(
            route(Head, "/rooms/ABC234/join"),
            Route::MethodNotAllowed { .. }
        ));
    }

    #[test]
    fn percent() {
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
