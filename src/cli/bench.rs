//! `gambiarra bench`: load a room (or any OpenAI-compatible server) and report throughput,
//! latency and time-to-first-token.

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use crate::http::url::{self, Scheme};
use crate::tools::bench::{BenchConfig, run as run_bench};

/// Benchmark a room: chat completions back to back on N keep-alive connections.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "bench",
    example = "64 connections for 10 s, streaming:\n  $ gambiarra bench --room K7QF2M --stream\nOne connection, a specific model:\n  $ gambiarra bench --room K7QF2M --model model:llama3 --concurrency 1 --duration 30s"
)]
pub struct BenchArgs {
    /// hub URL (default: $GAMBIARRA_HUB, else http://localhost:3000)
    #[argh(option)]
    pub(crate) hub: Option<String>,
    /// room code (omit with --path to benchmark any OpenAI-compatible server)
    #[argh(option)]
    pub(crate) room: Option<String>,
    /// request path instead of /rooms/CODE/v1/chat/completions
    #[argh(option)]
    pub(crate) path: Option<String>,
    /// the model field: *, a participant id, model:NAME or NAME (default *)
    #[argh(option, default = "String::from(\"*\")")]
    pub(crate) model: String,
    /// concurrent keep-alive connections (default 64)
    #[argh(option, short = 'c', default = "64")]
    pub(crate) concurrency: usize,
    /// how long to run: 10s, 500ms, 2m (default 10s)
    #[argh(
        option,
        short = 'd',
        default = "String::from(\"10s\")",
        from_str_fn(parse_duration_arg)
    )]
    pub(crate) duration: String,
    /// request streamed completions
    #[argh(switch)]
    pub(crate) stream: bool,
    /// extra JSON members for the body, e.g. '"max_tokens":16'
    #[argh(option, default = "String::new()")]
    pub(crate) extra: String,
    /// print the report as JSON
    #[argh(switch)]
    pub(crate) json: bool,
}

fn parse_duration_arg(s: &str) -> Result<String, String> {
    parse_duration(s).map(|_| s.to_string())
}

/// `10s`, `500ms`, `2m`, or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?} (use ms, s or m)")),
    };
    if !(secs > 0.0 && secs < 86_400.0) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(crate) fn run(args: BenchArgs) -> ExitCode {
    let hub = super::hub_url(args.hub.clone());
    let parsed = match url::parse(&hub) {
        Ok(u) if u.scheme == Scheme::Http => u,
        Ok(_) => {
            eprintln!("gambiarra bench: only http:// targets can be benchmarked");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("gambiarra bench: bad hub URL {hub:?}: {e}");
            return ExitCode::from(2);
        }
    };
    let path = match (&args.path, &args.room) {
        (Some(p), _) => p.clone(),
        (None, Some(code)) => format!("/rooms/{code}/v1/chat/completions"),
        (None, None) => {
            eprintln!("gambiarra bench: give --room CODE (or --path)");
            return ExitCode::from(2);
        }
    };
    let host = parsed.host.trim_start_matches('[').trim_end_matches(']');
    let Some(addr) = (host, parsed.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        eprintln!("gambiarra bench: cannot resolve {hub}");
        return ExitCode::FAILURE;
    };
    let config = BenchConfig {
        addr,
        host: format!("{}:{}", parsed.host, parsed.port),
        path,
        model: args.model.clone(),
        stream: args.stream,
        concurrency: args.concurrency,
        // Validated by argh through `parse_duration_arg`.
        duration: parse_duration(&args.duration).unwrap_or(Duration::from_secs(10)),
        extra: args.extra.clone(),
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let report = rt.block_on(run_bench(config));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "{} requests in {:.1}s, {} errors\n  requests/s:   {:.0}\n  latency ms:   p50 {:.2}  p99 {:.2}\n  TTFT ms:      p50 {:.2}  p99 {:.2}\n  tokens/s:     {:.0} ({} tokens)",
            report.requests,
            report.seconds,
            report.errors,
            report.requests_per_second,
            report.latency_ms_p50,
            report.latency_ms_p99,
            report.ttft_ms_p50,
            report.ttft_ms_p99,
            report.tokens_per_second,
            report.tokens
        );
    }
    if report.requests == 0 || report.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }
}
