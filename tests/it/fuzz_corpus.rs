//! Replays every saved fuzz input (`fuzz/corpus/<target>/*`, including crashes that were fixed
//! and kept as regressions) through the same entry points the fuzz targets use, on the stable
//! toolchain, so `cargo test` guards against regressions without cargo-fuzz.

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry_path in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
        let path = entry_path.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| entry(&data));
        assert!(result.is_ok(), "fuzz input {path:?} panics");
        n += 1;
    }
    assert!(n > 0, "no corpus for {target}");
    n
}

#[test]
fn head_corpus() {
    replay("head", gambiarra::internals::fuzzing::head);
}

#[test]
fn chunked_corpus() {
    replay("chunked", gambiarra::internals::fuzzing::chunked);
}

#[test]
fn router_corpus() {
    replay("router", gambiarra::internals::fuzzing::router);
}

#[test]
fn rewrite_corpus() {
    replay("rewrite", gambiarra::internals::fuzzing::rewrite);
}

#[test]
fn tokens_corpus() {
    replay("tokens", gambiarra::internals::fuzzing::tokens);
}

#[test]
fn response_corpus() {
    replay("response", gambiarra::internals::fuzzing::response);
}

#[test]
fn mdns_corpus() {
    replay("mdns", gambiarra::internals::fuzzing::mdns);
}

#[test]
fn translate_ollama_corpus() {
    replay(
        "translate_ollama",
        gambiarra::internals::fuzzing::translate_ollama,
    );
}

#[test]
fn translate_anthropic_corpus() {
    replay(
        "translate_anthropic",
        gambiarra::internals::fuzzing::translate_anthropic,
    );
}
