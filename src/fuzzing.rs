//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and by the test that
//! replays the saved corpus on the stable toolchain (`tests/fuzz_corpus.rs`). Each takes
//! arbitrary bytes, must never panic, and checks invariants of its own.

use bytes::Bytes;

use crate::http::body::ChunkedDecoder;
use crate::http::head::{MAX_HEAD_BYTES, parse_request_bytes};
use crate::http::{Method, url};
use crate::hub::router;

/// The request-head parser: either an error with a 4xx/5xx status, incomplete, or a head whose
/// views all lie inside the input.
pub fn head(data: &[u8]) {
    let raw = Bytes::copy_from_slice(data);
    match parse_request_bytes(&raw) {
        Ok(Some(h)) => {
            assert!(h.raw().len() <= MAX_HEAD_BYTES);
            assert!(h.raw().len() <= data.len());
            let _ = (h.path(), h.query(), h.method_str());
            for (n, v) in h.headers() {
                assert!(!n.is_empty());
                let _ = v;
            }
            // Routing whatever path came in must not panic either.
            let _ = router::route(h.method, h.path());
        }
        Ok(None) => assert!(data.len() <= MAX_HEAD_BYTES),
        Err(e) => assert!((400..=599).contains(&e.status())),
    }
}

/// The chunked decoder: the whole input at once and byte by byte must agree on the payload,
/// the bytes consumed, and whether the body ended.
pub fn chunked(data: &[u8]) {
    let mut whole = Vec::new();
    let mut d = ChunkedDecoder::new();
    let r1 = d.feed(data, |s| whole.extend_from_slice(s));

    let mut split = Vec::new();
    let mut d2 = ChunkedDecoder::new();
    let mut consumed = 0;
    let mut r2 = Ok(false);
    for b in data {
        match d2.feed(std::slice::from_ref(b), |s| split.extend_from_slice(s)) {
            Ok(p) => {
                consumed += p.consumed;
                if p.done {
                    r2 = Ok(true);
                    break;
                }
            }
            Err(e) => {
                r2 = Err(e);
                break;
            }
        }
    }
    match (r1, r2) {
        (Ok(p), Ok(done)) => {
            assert_eq!(p.done, done);
            assert_eq!(whole, split);
            if p.done {
                assert_eq!(p.consumed, consumed);
            }
            assert!(whole.len() <= data.len());
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        (a, b) => panic!("whole {a:?} vs byte-wise {b:?}"),
    }
}

/// The router and the URL parser on arbitrary text.
pub fn router(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for m in [Method::Get, Method::Post, Method::Delete, Method::Other] {
        let r = router::route(m, s);
        if let router::Route::Leave { id, .. } = r {
            assert!(!id.is_empty());
        }
    }
    if let Ok(u) = url::parse(s) {
        assert!(!u.host.is_empty());
        assert!(u.port != 0);
    }
}
