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

/// The request-body scanner and splice: a body the scanner accepts is JSON (serde agrees), and
/// the spliced body is JSON whose `model` is the participant's, with defaults only for keys the
/// client left out. A body serde accepts as an object with a string `model` is accepted too.
pub fn rewrite(data: &[u8]) {
    use crate::hub::proxy::rewrite::{Defaults, ScanError, scan, splice};
    use crate::types::GenerationConfig;
    use serde::de::IgnoredAny;

    let syntax_ok = serde_json::from_slice::<IgnoredAny>(data).is_ok();
    let result = scan(data);
    match &result {
        Ok(_)
        | Err(
            ScanError::NotObject
            | ScanError::MissingModel
            | ScanError::ModelNotString
            | ScanError::DuplicateModel,
        ) => {
            assert!(syntax_ok, "scanner accepted what serde rejects: {result:?}")
        }
        Err(ScanError::Invalid(_)) => {}
    }
    let value = serde_json::from_slice::<serde_json::Value>(data).ok();
    // serde keeps the last of two `model` keys; the scanner refuses both.
    if let Some(model) = value.as_ref().and_then(|v| v.get("model")?.as_str())
        && result != Err(ScanError::DuplicateModel)
    {
        assert!(
            result.is_ok(),
            "serde accepted, scanner refused: {result:?}"
        );
        assert_eq!(result.as_ref().map(|s| s.model.as_str()).ok(), Some(model));
    }
    let Ok(found) = result else {
        return;
    };
    let config = GenerationConfig {
        temperature: serde_json::Number::from_f64(0.5),
        max_tokens: Some(64.into()),
        stop: Some(vec!["\n".into()]),
        ..Default::default()
    };
    let body = Bytes::copy_from_slice(data);
    let out: Vec<u8> = splice(&body, &found, &Defaults::new("p\"model", &config)).concat();
    let Some(before) = value else {
        // Valid syntax serde cannot hold as a Value (numbers out of range): still valid syntax.
        assert!(serde_json::from_slice::<IgnoredAny>(&out).is_ok());
        return;
    };
    let after: serde_json::Value = serde_json::from_slice(&out).expect("spliced body is JSON");
    assert_eq!(after["model"], "p\"model");
    for key in ["temperature", "max_tokens", "stop"] {
        match before.get(key) {
            Some(v) => assert_eq!(&after[key], v, "client's {key} kept"),
            None => assert!(after.get(key).is_some(), "default {key} added"),
        }
    }
}

/// The metrics scanner: splitting the body anywhere changes nothing, and (differentially) the
/// events it counts are exactly those that `serde_json::Value` finds output in, for every
/// `data:` line whose JSON has the shape the scanner reads (re-encoded by serde first, so
/// duplicate keys, which the two parsers treat differently, are out of the picture).
pub fn tokens(data: &[u8]) {
    use crate::hub::proxy::tokens::{BodyKind, MAX_LINE, TokenScanner};
    let Some((&stride, body)) = data.split_first() else {
        return;
    };
    let stride = usize::from(stride % 17) + 1;
    for kind in [BodyKind::Sse, BodyKind::Ndjson, BodyKind::Document] {
        let mut whole = TokenScanner::new(kind);
        whole.feed(body);
        whole.finish();
        let mut split = TokenScanner::new(kind);
        for piece in body.chunks(stride) {
            split.feed(piece);
        }
        split.finish();
        assert_eq!(whole.content_chunks, split.content_chunks, "{kind:?}");
        assert_eq!(whole.usage_tokens, split.usage_tokens, "{kind:?}");
        assert_eq!(
            whole.first_content.is_some(),
            split.first_content.is_some(),
            "{kind:?}"
        );
    }
    // Differential: each well-shaped event, canonicalised, against a `Value` reading.
    let mut expected = 0u64;
    let mut canonical = Vec::new();
    for line in body.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(payload) = line.strip_prefix(b"data:") else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload.trim_ascii()) else {
            continue;
        };
        let Some(output) = reference_output(&v) else {
            continue;
        };
        let Ok(encoded) = serde_json::to_vec(&v) else {
            continue;
        };
        if encoded.len() + 8 > MAX_LINE {
            continue;
        }
        expected += u64::from(output);
        canonical.extend_from_slice(b"data: ");
        canonical.extend_from_slice(&encoded);
        canonical.extend_from_slice(b"\n\n");
    }
    let mut s = TokenScanner::new(BodyKind::Sse);
    s.feed(&canonical);
    s.finish();
    assert_eq!(
        s.content_chunks,
        expected,
        "{}",
        String::from_utf8_lossy(&canonical)
    );
}

/// Whether an event carries generated output, read from a `Value`; `None` when it is not
/// shaped the way the scanner reads events (it then counts nothing, or fails to parse).
fn reference_output(v: &serde_json::Value) -> Option<bool> {
    use serde_json::Value;
    fn text(v: Option<&Value>) -> Option<bool> {
        match v {
            None | Some(Value::Null | Value::Bool(_) | Value::Number(_) | Value::Object(_)) => {
                Some(false)
            }
            Some(Value::String(s)) => Some(!s.is_empty()),
            Some(Value::Array(parts)) => {
                let mut any = false;
                for p in parts {
                    any |= text(object(p)?.get("text"))?;
                }
                Some(any)
            }
        }
    }
    fn object(v: &Value) -> Option<&serde_json::Map<String, Value>> {
        v.as_object()
    }
    fn opt_object(v: Option<&Value>) -> Option<Option<&serde_json::Map<String, Value>>> {
        match v {
            None | Some(Value::Null) => Some(None),
            Some(Value::Object(o)) => Some(Some(o)),
            _ => None,
        }
    }
    fn opt_u64(v: Option<&Value>) -> Option<()> {
        match v {
            None | Some(Value::Null) => Some(()),
            Some(n) => n.as_u64().map(|_| ()),
        }
    }
    fn delta(d: Option<&serde_json::Map<String, Value>>) -> Option<bool> {
        let Some(d) = d else {
            return Some(false);
        };
        let mut any = false;
        for key in ["content", "reasoning_content", "reasoning", "thinking"] {
            any |= text(d.get(key))?;
        }
        match d.get("tool_calls") {
            None | Some(Value::Null) => {}
            Some(Value::Array(calls)) => {
                for call in calls {
                    if let Some(f) = opt_object(object(call)?.get("function"))? {
                        any |= text(f.get("name"))? | text(f.get("arguments"))?;
                    }
                }
            }
            _ => return None,
        }
        Some(any)
    }
    let event = object(v)?;
    let mut any = false;
    match event.get("choices") {
        None | Some(Value::Null) => {}
        Some(Value::Array(choices)) => {
            for c in choices {
                let c = object(c)?;
                any |= delta(opt_object(c.get("delta"))?)?;
                any |= delta(opt_object(c.get("message"))?)?;
                any |= text(c.get("text"))?;
            }
        }
        _ => return None,
    }
    if let Some(u) = opt_object(event.get("usage"))? {
        opt_u64(u.get("completion_tokens"))?;
    }
    opt_u64(event.get("eval_count"))?;
    any |= delta(opt_object(event.get("message"))?)?;
    any |= text(event.get("response"))?;
    Some(any)
}

/// The upstream response reader: head then body out of the bytes as a socket would give them.
/// Either an error, or a head whose header views lie in the input and a body no larger than the
/// input and the limit.
pub fn response(data: &[u8]) {
    use crate::http::client::{read_body, read_head};
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    const LIMIT: usize = 4096;
    let fut = async {
        let mut io = data;
        let mut buf = bytes::BytesMut::new();
        let head = match read_head(&mut io, &mut buf).await {
            Ok(h) => h,
            Err(_) => return,
        };
        let mut header_bytes = 0;
        for (n, v) in head.headers() {
            assert!(!n.is_empty());
            header_bytes += n.len() + v.len();
        }
        assert!(header_bytes <= data.len());
        let mut got = 0usize;
        if read_body(&mut io, &mut buf, head.framing, LIMIT, |d| got += d.len())
            .await
            .is_ok()
        {
            assert!(got <= data.len());
            assert!(got <= LIMIT);
        }
    };
    // Reading from a slice never waits: one poll runs it to the end.
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(())));
}

/// The mDNS answer decoder (discovery reads whatever the LAN sends): never panics, and what it
/// decodes stays within the packet's bounds on names.
pub fn mdns(data: &[u8]) {
    use crate::mdns::packet::{MAX_NAME, RData, parse};
    if let Ok(m) = parse(data) {
        for r in &m.records {
            assert!(
                r.name.len() <= MAX_NAME * 3,
                "lossy UTF-8 at most triples a name"
            );
            if let RData::Ptr(n) | RData::Srv { target: n, .. } = &r.data {
                assert!(n.len() <= MAX_NAME * 3);
            }
        }
        let _ = crate::mdns::hubs_in(&m, std::net::IpAddr::from([127, 0, 0, 1]));
    }
}

/// Ollama's API translation: arbitrary bytes as a request of each operation (an error or an
/// OpenAI body that is JSON with the model asked for), and as an upstream answer (SSE or a
/// document, whole and split at every tenth byte) through the answer translator, which must
/// yield JSON lines only (up to where a bound ended it) and end.
pub fn translate_ollama(data: &[u8]) {
    use crate::hub::translate::ollama::{Op, Out, request};
    use crate::hub::translate::{Reads, Translation, drain};
    for op in [Op::Chat, Op::Generate, Op::Embed, Op::Embeddings] {
        if let Ok(t) = request(op, data) {
            let v: serde_json::Value = serde_json::from_slice(&t.body).expect("a JSON body");
            assert_eq!(v["model"].as_str(), Some(t.model.as_str()));
        }
    }
    for (stream, status) in [(true, 200), (false, 200), (true, 500)] {
        for step in [data.len().max(1), 10] {
            let reads = Reads::of(data.chunks(step).map(Bytes::copy_from_slice));
            let out = Out::new(Op::Chat, "m".into(), stream, status, stream);
            let (text, _) = drain(&mut Translation::new(reads, out));
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                serde_json::from_slice::<serde_json::Value>(line).expect("a JSON line");
            }
        }
    }
}

/// Anthropic's Messages translation: arbitrary bytes as a request (an error, or an OpenAI body
/// that is JSON with the model asked for), and as an upstream answer through the answer
/// translator (events or a document, whole and split), which must yield well-formed SSE
/// events (each `data:` JSON of the event's `type`) or one JSON document, and end.
pub fn translate_anthropic(data: &[u8]) {
    use crate::hub::translate::anthropic::{Op, Out, request};
    use crate::hub::translate::{Reads, Translation, drain};
    for op in [Op::Messages, Op::CountTokens] {
        if let Ok(t) = request(op, data) {
            let v: serde_json::Value = serde_json::from_slice(&t.body).expect("a JSON body");
            assert_eq!(v["model"].as_str(), Some(t.model.as_str()));
        }
    }
    for (stream, status) in [(true, 200), (false, 200), (true, 500)] {
        for step in [data.len().max(1), 10] {
            let reads = Reads::of(data.chunks(step).map(Bytes::copy_from_slice));
            let out = Out::new("m".into(), stream, status, stream);
            let events = stream && status == 200;
            let (text, failed) = drain(&mut Translation::new(reads, out));
            if failed.is_some() {
                return;
            }
            if !events {
                serde_json::from_slice::<serde_json::Value>(&text).expect("one JSON document");
                continue;
            }
            let text = std::str::from_utf8(&text).expect("UTF-8 events");
            for event in text.split("\n\n").filter(|e| !e.is_empty()) {
                let (name, json) = event.split_once("\ndata: ").expect("event and data");
                let v: serde_json::Value = serde_json::from_str(json).expect("JSON data");
                assert_eq!(Some(name.trim_start_matches("event: ")), v["type"].as_str());
            }
        }
    }
}

/// For the benches: an OpenAI streamed answer (`reads`, decoded) through the Ollama (`false`)
/// or Anthropic (`true`) answer translator; the bytes it yields.
pub fn translate_answer(reads: &[Bytes], anthropic: bool) -> usize {
    use crate::hub::translate::{Reads, Translation, anthropic as an, drain, ollama as ol};
    let reads = Reads::of(reads.iter().cloned());
    let (text, _) = if anthropic {
        let out = an::Out::new("m".into(), true, 200, true);
        drain(&mut Translation::new(reads, out))
    } else {
        let out = ol::Out::new(ol::Op::Chat, "m".into(), true, 200, true);
        drain(&mut Translation::new(reads, out))
    };
    text.len()
}
