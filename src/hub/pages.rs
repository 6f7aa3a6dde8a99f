//! The hub's routes for browsers and the links that name a room: `GET /` (the home page, or
//! for API clients what this hub is), `GET /rooms/:code` (the room's page for a browser, its
//! public summary and links as JSON for everyone else), `GET /rooms/:code/qr.svg` and the
//! pages' files under `/ui/`. The bytes and headers of the pages are `crate::web`'s (cargo
//! feature `web`); without it, the JSON answers remain and the pages are 404.
//!
//! A link is built from the hub's public origin: `serve --public-url` when set; else the
//! `Host` the client used; but when that is a loopback name (the page was opened on the
//! hub's own machine) and the hub listens on every interface, this machine's LAN address, so
//! the QR code and snippets work on the other machines in the room.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use serde_json::json;

use crate::http::{Request, RequestHead, Response};
use crate::hub::HubInner;
use crate::hub::error::{ApiError, msg};
use crate::hub::rooms::Room;
use crate::hub::router::Route;

type Result<T> = std::result::Result<T, ApiError>;

/// Longest `Host` used in a link; a longer one (or one with other characters than a host
/// name, an address and a port have) is not used.
const MAX_HOST: usize = 255;

/// `GET /`: the home page for a browser; what this is, for anyone else.
pub(crate) fn home(req: &Request) -> Response {
    #[cfg(feature = "web")]
    if crate::web::wants_html(&req.head) {
        return vary(crate::web::home(&req.head));
    }
    let _ = req;
    vary(Response::json(
        200,
        serde_json::to_vec(&json!({
            "service": "gambiarra",
            "version": env!("CARGO_PKG_VERSION"),
            "rooms": "/rooms",
            "health": "/health",
        }))
        .unwrap_or_default(),
    ))
}

/// `Vary: Accept`: on every answer of a path that serves a page or JSON by `Accept` (so caches
/// keep them apart).
fn vary(resp: Response) -> Response {
    resp.header("Vary", bytes::Bytes::from_static(b"Accept"))
}

/// A room route refused before its handler ran (no such room, or deleted): a browser asking
/// for the room's page gets the page with that status, whose script says so; `None` for
/// anything else.
pub(crate) fn missing_room(route: &Route<'_>, head: &RequestHead, status: u16) -> Option<Response> {
    #[cfg(feature = "web")]
    if matches!(route, Route::Room { .. })
        && matches!(status, 404 | 410)
        && crate::web::wants_html(head)
    {
        return Some(vary(crate::web::room_missing(head, status)));
    }
    let _ = (route, head, status);
    None
}

/// `GET /ui/:name`: a file of the pages.
pub(crate) fn asset(name: &str, req: &Request) -> Result<Response> {
    #[cfg(feature = "web")]
    if let Some(resp) = crate::web::asset(name, &req.head) {
        return Ok(resp);
    }
    let _ = (name, req);
    Err(ApiError::not_found(msg::NOT_FOUND))
}

/// `GET /rooms/:code`: the room's page for a browser; otherwise its public summary (as
/// `GET /rooms` lists it, and how its requests are routed) and the URLs to use it by.
pub(crate) fn room(hub: &HubInner, room: &Room, req: &Request) -> Result<Response> {
    #[cfg(feature = "web")]
    if crate::web::wants_html(&req.head) {
        return Ok(vary(crate::web::room(&req.head)));
    }
    let mut summary = serde_json::to_value(room.summary()).unwrap_or_default();
    summary["routing"] = json!(room.info.routing.unwrap_or(hub.config.routing));
    // The room's page is also its Anthropic base URL and its Ollama host.
    let page = page_url(hub, &req.head, &room.info.code);
    let answer = json!({
        "room": summary,
        "links": {
            "openai": format!("{page}/v1"),
            "anthropic": page,
            "ollama": page,
            "events": format!("{page}/events"),
            "qr": format!("{page}/qr.svg"),
            "page": page,
        },
    });
    Ok(vary(Response::json(
        200,
        serde_json::to_vec(&answer).unwrap_or_default(),
    )))
}

/// `GET /rooms/:code/qr.svg`: a QR code of the room page's URL.
pub(crate) fn room_qr(hub: &HubInner, room: &Room, req: &Request) -> Result<Response> {
    #[cfg(feature = "web")]
    {
        Ok(crate::web::qr_svg(&page_url(
            hub,
            &req.head,
            &room.info.code,
        )))
    }
    #[cfg(not(feature = "web"))]
    {
        let _ = (hub, room, req);
        Err(ApiError::not_found(msg::NOT_FOUND))
    }
}

/// The room's page as the client should share it: every link of a room starts with it.
fn page_url(hub: &HubInner, head: &RequestHead, code: &str) -> String {
    format!("{}/rooms/{code}", public_origin(hub, head))
}

/// `scheme://host[:port]` of this hub as the client should share it.
fn public_origin(hub: &HubInner, head: &RequestHead) -> String {
    if let Some(url) = &hub.config.public_url {
        return url.clone();
    }
    let scheme = if hub.config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = head
        .header_str("host")
        .map(str::trim)
        .filter(|h| plain_host(h));
    match host {
        Some(host) if !is_loopback_name(host) => format!("{scheme}://{host}"),
        // The page was opened on this machine (or the client sent no usable Host).
        _ => {
            let ip = if hub.listen.ip().is_unspecified() {
                lan_address(hub.listen).unwrap_or_else(|| loopback(hub.listen))
            } else {
                hub.listen.ip()
            };
            let port = hub.listen.port();
            match ip {
                IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
                IpAddr::V4(v4) => format!("{scheme}://{v4}:{port}"),
            }
        }
    }
}

/// A host name, IPv4 address or bracketed IPv6 address, with an optional port: nothing that
/// could break out of a URL.
fn plain_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// `localhost`, `*.localhost`, `127.x.x.x`, `[::1]` (with or without a port).
fn is_loopback_name(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    let name = name.to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn loopback(listen: SocketAddr) -> IpAddr {
    match listen {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    }
}

/// The address this machine reaches other machines from: the source address the kernel picks
/// for a route to a documentation address (connecting a UDP socket sends nothing). `None`
/// without a route.
fn lan_address(listen: SocketAddr) -> Option<IpAddr> {
    let probe = |bind: SocketAddr, to: SocketAddr| {
        let socket = UdpSocket::bind(bind).ok()?;
        socket.connect(to).ok()?;
        let ip = socket.local_addr().ok()?.ip();
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
    };
    let v4 = || {
        probe(
            (Ipv4Addr::UNSPECIFIED, 0).into(),
            (Ipv4Addr::new(192, 0, 2, 1), 9).into(),
        )
    };
    match listen {
        SocketAddr::V4(_) => v4(),
        // `::` also takes IPv4 (dual stack): an IPv4 address is what most LANs use.
        SocketAddr::V6(_) => v4().or_else(|| {
            probe(
                (Ipv6Addr::UNSPECIFIED, 0).into(),
                (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9).into(),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_used_in_links() {
        for ok in [
            "example.org",
            "192.168.1.5:3000",
            "[fe80::1]:3000",
            "hub-1.lan",
        ] {
            assert!(plain_host(ok), "{ok}");
        }
        for bad in ["", "a b", "x/y", "x\"><script>", "a@b", &"a".repeat(300)] {
            assert!(!plain_host(bad), "{bad}");
        }
        for lo in [
            "localhost",
            "LOCALHOST:3000",
            "app.localhost",
            "127.0.0.1:80",
            "[::1]:3000",
        ] {
            assert!(is_loopback_name(lo), "{lo}");
        }
        for not in ["192.168.1.5:3000", "[fe80::1]", "example.org"] {
            assert!(!is_loopback_name(not), "{not}");
        }
    }
}
