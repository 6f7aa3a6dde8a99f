//! The pages a browser gets from the hub: the home page (the rooms, create one, how to join)
//! and a room's page (who shares what, live; how to use it; a chat box). Static files compiled
//! into the binary (`src/web/ui/`): no build step, no framework, nothing fetched from the
//! internet, so they work on a LAN without one. Everything they show comes from the hub's own
//! JSON API and event stream, rendered by their scripts as text (never as HTML).
//!
//! This module owns the bytes and how they are served: content types, validators (`ETag`,
//! `304`), and the security headers — a strict `Content-Security-Policy` (scripts and styles
//! from these files only, no inline script, no `eval`, no other origin), no framing, no
//! sniffing, no referrer. It knows nothing of rooms; `hub::pages` routes to it.

pub(crate) mod qr;

use bytes::Bytes;

use crate::http::{Body, RequestHead, Response};

/// A file of the pages.
pub(crate) struct Asset {
    pub(crate) name: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) bytes: &'static [u8],
    /// A strong validator: a hash of the bytes, quoted.
    etag: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("ui/", $name)),
            etag: {
                const HASH: u64 = fnv1a(include_bytes!(concat!("ui/", $name)));
                const HEX: [u8; 18] = quoted_hex(HASH);
                // ASCII hex digits and quotes: always UTF-8.
                match std::str::from_utf8(&HEX) {
                    Ok(s) => s,
                    Err(_) => "\"0\"",
                }
            },
        }
    };
}

/// Every file, by the name it is served under (`/ui/NAME`; the pages themselves at `/` and
/// `/rooms/:code`).
pub(crate) static ASSETS: [Asset; 7] = [
    asset!("home.html", "text/html; charset=utf-8"),
    asset!("room.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("common.js", "text/javascript; charset=utf-8"),
    asset!("home.js", "text/javascript; charset=utf-8"),
    asset!("room.js", "text/javascript; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

/// What the pages may load and do: their own scripts, styles and images, requests to the hub
/// itself, nothing inline, nothing evaluated, no other origin, not framed, no form posts.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The hub's home page.
pub(crate) fn home(head: &RequestHead) -> Response {
    serve(&ASSETS[0], head)
}

/// A room's page (the same file for every room: its script reads the code from the URL).
pub(crate) fn room(head: &RequestHead) -> Response {
    serve(&ASSETS[1], head)
}

/// `/ui/NAME`, if there is such a file (the pages are only served at their own paths).
pub(crate) fn asset(name: &str, head: &RequestHead) -> Option<Response> {
    ASSETS
        .iter()
        .skip(2)
        .find(|a| a.name == name)
        .map(|a| serve(a, head))
}

/// Whether a request is a browser's navigation (it names `text/html`, not with `q=0`), not an
/// API call: API clients send `application/json`, `*/*` or nothing.
pub(crate) fn wants_html(head: &RequestHead) -> bool {
    head.header("accept").is_some_and(|accept| {
        accept.split(|&b| b == b',').any(|item| {
            let mut parts = item.split(|&b| b == b';');
            let media = parts.next().unwrap_or_default();
            media.trim_ascii().eq_ignore_ascii_case(b"text/html")
                && !parts.any(|p| {
                    let p = p.trim_ascii();
                    p.len() >= 2
                        && p[..2].eq_ignore_ascii_case(b"q=")
                        && p[2..].iter().all(|&c| c == b'0' || c == b'.')
                })
        })
    })
}

/// The room page with another status (`404`, `410`): its script says the room is not there.
pub(crate) fn room_missing(head: &RequestHead, status: u16) -> Response {
    let mut resp = room(head);
    if resp.status == 200 {
        resp.status = status;
    }
    resp
}

/// A QR code of `text` as SVG (404-free: text too long for a QR code gets 414).
pub(crate) fn qr_svg(text: &str) -> Response {
    match qr::QrCode::encode(text.as_bytes()) {
        Some(code) => with_security_headers(Response::new(200))
            .header("Content-Type", Bytes::from_static(b"image/svg+xml"))
            .header("Cache-Control", Bytes::from_static(b"no-cache"))
            .body(Body::Full(Bytes::from(code.to_svg(4)))),
        None => Response::json_error(414, "too long for a QR code"),
    }
}

fn serve(asset: &Asset, head: &RequestHead) -> Response {
    // Weak comparison (RFC 9110 13.1.2): `W/"x"` matches `"x"` (a proxy that compresses makes
    // validators weak), and `*` matches anything.
    let fresh = head.header("if-none-match").is_some_and(|v| {
        v.split(|&b| b == b',').any(|t| {
            let t = t.trim_ascii();
            t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == asset.etag.as_bytes()
        })
    });
    let resp = with_security_headers(Response::new(if fresh { 304 } else { 200 }))
        .header("ETag", Bytes::from_static(asset.etag.as_bytes()))
        // Revalidated every time (a 304 is a few bytes): a new binary's pages are never mixed
        // with an old one's scripts.
        .header("Cache-Control", Bytes::from_static(b"no-cache"));
    if fresh {
        return resp;
    }
    resp.header(
        "Content-Type",
        Bytes::from_static(asset.content_type.as_bytes()),
    )
    .body(Body::Full(Bytes::from_static(asset.bytes)))
}

fn with_security_headers(resp: Response) -> Response {
    resp.header(
        "Content-Security-Policy",
        Bytes::from_static(CSP.as_bytes()),
    )
    .header("X-Content-Type-Options", Bytes::from_static(b"nosniff"))
    .header("X-Frame-Options", Bytes::from_static(b"DENY"))
    .header("Referrer-Policy", Bytes::from_static(b"no-referrer"))
    .header(
        "Cross-Origin-Opener-Policy",
        Bytes::from_static(b"same-origin"),
    )
}

/// FNV-1a, 64 bits: an `ETag` computed at compile time.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const fn quoted_hex(hash: u64) -> [u8; 18] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'"'; 18];
    let mut i = 0;
    while i < 16 {
        out[1 + i] = DIGITS[((hash >> (60 - 4 * i)) & 0xf) as usize];
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request head from its request line and headers (a `Host` is added).
    fn head(raw: &[u8]) -> RequestHead {
        let line = raw.iter().position(|&b| b == b'\n').unwrap() + 1;
        let raw = [&raw[..line], b"Host: hub\r\n", &raw[line..]].concat();
        crate::http::head::parse_request_bytes(&Bytes::from(raw))
            .unwrap()
            .unwrap()
    }

    /// An `on…=` attribute: an inline event handler.
    fn inline_handler(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name > 0 && rest[name..].starts_with('=')
        })
    }

    #[test]
    fn browsers_get_html_and_api_clients_json() {
        let browser = head(b"GET / HTTP/1.1\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\r\n");
        assert!(wants_html(&browser));
        for accept in [
            &b"GET / HTTP/1.1\r\nAccept: application/json, text/html;q=0\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nAccept: text/html; q=0.0\r\n\r\n",
            b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
            b"GET / HTTP/1.1\r\nAccept: application/json\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nAccept: text/htmlx\r\n\r\n",
        ] {
            assert!(!wants_html(&head(accept)));
        }
    }

    #[test]
    fn files_revalidate_with_their_etag() {
        let first = asset("room.js", &head(b"GET /ui/room.js HTTP/1.1\r\n\r\n")).unwrap();
        assert_eq!(first.status, 200);
        let etag = first
            .headers
            .iter()
            .find(|(n, _)| &n[..] == b"ETag")
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(etag.len(), 18);
        let raw = [
            &b"GET /ui/room.js HTTP/1.1\r\nIf-None-Match: \"x\", "[..],
            &etag,
            b"\r\n\r\n",
        ]
        .concat();
        let again = asset("room.js", &head(&raw)).unwrap();
        assert_eq!(again.status, 304);
        assert!(matches!(again.body, Body::Empty));
        let weak = [
            &b"GET /ui/room.js HTTP/1.1\r\nIf-None-Match: W/"[..],
            &etag,
            b"\r\n\r\n",
        ]
        .concat();
        assert_eq!(asset("room.js", &head(&weak)).unwrap().status, 304);
        let any = b"GET /ui/room.js HTTP/1.1\r\nIf-None-Match: *\r\n\r\n";
        assert_eq!(asset("room.js", &head(any)).unwrap().status, 304);
        // The pages are not files under /ui/, and nothing else is.
        assert!(asset("room.html", &head(b"GET / HTTP/1.1\r\n\r\n")).is_none());
        assert!(asset("../Cargo.toml", &head(b"GET / HTTP/1.1\r\n\r\n")).is_none());
    }

    #[test]
    fn every_response_carries_the_policy() {
        let resp = home(&head(b"GET / HTTP/1.1\r\n\r\n"));
        let csp = resp
            .headers
            .iter()
            .find(|(n, _)| &n[..] == b"Content-Security-Policy")
            .map(|(_, v)| v.clone())
            .unwrap();
        assert!(csp.starts_with(b"default-src 'none'; script-src 'self'"));
        assert!(!CSP.contains("unsafe"));
        // No page carries an inline script or style, or a handler attribute.
        for a in &ASSETS {
            if a.name.ends_with(".html") {
                let text = std::str::from_utf8(a.bytes).unwrap();
                assert!(!text.contains("<script>"), "{}", a.name);
                assert!(!text.contains("<style"), "{}", a.name);
                assert!(!text.contains(" style="), "{}", a.name);
                assert!(!inline_handler(text), "{}: an inline handler", a.name);
            }
        }
    }

    #[test]
    fn the_pages_weigh_tens_of_kilobytes() {
        let total: usize = ASSETS.iter().map(|a| a.bytes.len()).sum();
        assert!(total < 96 * 1024, "{total} bytes");
    }
}
