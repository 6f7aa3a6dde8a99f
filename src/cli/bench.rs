//! `gambiarra bench`: load a room (or any OpenAI-compatible server) and report throughput,
//! latency and time-to-first-token.

use std::net::ToSocketAddrs;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use crate::http::url::{self, Scheme};
use crate::tools::bench::{
    BenchConfig, ClientSpec, ConversationConfig, run as run_bench, run_clients, run_conversations,
};

/// Benchmark a room: chat completions back to back on N keep-alive connections.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "bench",
    example = "64 connections for 10 s, streaming:\n  $ gambiarra bench --room K7QF2M --stream\nOne connection, a specific model:\n  $ gambiarra bench --room K7QF2M --model model:llama3 --concurrency 1 --duration 30s\nFairness: one greedy client and two light ones:\n  $ gambiarra bench --room K7QF2M --client greedy=32 --client a=1 --client b=1\nEight 6-turn chats sharing a 1.5 KB system prompt:\n  $ gambiarra bench --room K7QF2M --conversations 8 --turns 6 --extra '\"max_tokens\":32'"
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
    /// a client KEY=CONNECTIONS, sending `Authorization: Bearer KEY` on that many
    /// connections; repeat for several (replaces --concurrency; reports each client and
    /// Jain's fairness index)
    #[argh(option)]
    pub(crate) client: Vec<ClientSpec>,
    /// run this many multi-turn conversations at once instead (each turn sends the whole
    /// history, streamed; reports time to first token per turn and the total time)
    #[argh(option)]
    pub(crate) conversations: Option<usize>,
    /// turns per conversation (default 6)
    #[argh(option, default = "6")]
    pub(crate) turns: usize,
    /// bytes of the system prompt every conversation shares (default 1500)
    #[argh(option, default = "1500")]
    pub(crate) system_bytes: usize,
    /// bytes of each question (default 200)
    #[argh(option, default = "200")]
    pub(crate) question_bytes: usize,
    /// mean pause between an answer and the next question, in ms (each drawn between half and
    /// 1.5 times it; default 0)
    #[argh(option, default = "0")]
    pub(crate) think_ms: u64,
    /// instead: open this many event-stream subscribers on the room, then time how long each
    /// of --events events (a probe participant joining, leaving, …) takes to reach them all
    #[argh(option)]
    pub(crate) subscribers: Option<usize>,
    /// events to time with --subscribers (default 6)
    #[argh(option, default = "6")]
    pub(crate) events: usize,
    /// the hub's process id: with --subscribers, report its resident memory per subscriber
    #[argh(option)]
    pub(crate) hub_pid: Option<u32>,
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
    if let Some(n) = args.subscribers {
        let Some(code) = args.room.clone() else {
            eprintln!("gambiarra bench: --subscribers needs --room CODE");
            return ExitCode::from(2);
        };
        if !(1..=1_000_000).contains(&n) || !(1..=1000).contains(&args.events) {
            eprintln!("gambiarra bench: --subscribers is 1 to 1000000, --events 1 to 1000");
            return ExitCode::from(2);
        }
        let fan = crate::tools::fanout::FanoutConfig {
            addr: config.addr,
            host: config.host.clone(),
            code,
            subscribers: n,
            events: args.events,
            hub_pid: args.hub_pid,
        };
        return match rt.block_on(crate::tools::fanout::run(fan)) {
            Ok(r) => {
                if args.json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    println!(
                        "{} subscribers connected in {:.1}s",
                        r.subscribers, r.connect_s
                    );
                    if let (Some(b), Some(a), Some(per)) = (
                        r.hub_rss_before_kib,
                        r.hub_rss_after_kib,
                        r.bytes_per_subscriber,
                    ) {
                        println!(
                            "  hub RSS {b} KiB before, {a} KiB with them: {per:.0} bytes per subscriber"
                        );
                    }
                    for d in &r.deliveries {
                        println!(
                            "  {:<20} to {:>7}: first {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, all {:.2} ms",
                            d.event, d.received, d.first_ms, d.p50_ms, d.p99_ms, d.all_ms
                        );
                    }
                }
                if r.deliveries.iter().all(|d| d.received == n) {
                    ExitCode::SUCCESS
                } else {
                    eprintln!("gambiarra bench: some subscribers missed an event");
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("gambiarra bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(n) = args.conversations {
        if !(1..=10_000).contains(&n) || !(1..=1000).contains(&args.turns) {
            eprintln!("gambiarra bench: --conversations is 1 to 10000, --turns 1 to 1000");
            return ExitCode::from(2);
        }
        let conv = ConversationConfig {
            conversations: n,
            turns: args.turns,
            system_bytes: args.system_bytes.min(1 << 20),
            question_bytes: args.question_bytes.min(1 << 20),
            think: Duration::from_millis(args.think_ms.min(3_600_000)),
        };
        let r = rt.block_on(run_conversations(config, conv));
        if args.json {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        } else {
            println!(
                "{} conversations × {} turns in {:.1}s, {} errors\n  TTFT ms:      p50 {:.1}  p90 {:.1}\n  latency ms:   p50 {:.1}  p90 {:.1}\n  TTFT p50 by turn: {}",
                r.conversations,
                r.turns,
                r.seconds,
                r.errors,
                r.ttft_ms_p50,
                r.ttft_ms_p90,
                r.latency_ms_p50,
                r.latency_ms_p90,
                r.ttft_ms_p50_by_turn
                    .iter()
                    .map(|t| format!("{t:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        return if r.errors > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    if !args.client.is_empty() {
        let r = rt.block_on(run_clients(config, &args.client));
        if args.json {
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        } else {
            println!(
                "{:.1}s, Jain's fairness index {:.3}",
                r.seconds, r.jain_index
            );
            for c in &r.clients {
                println!(
                    "  {:<12} ×{:<4} {:>6} requests ({} errors) {:>8.1}/s  latency ms p50 {:.1} p99 {:.1}",
                    c.key,
                    c.concurrency,
                    c.requests,
                    c.errors,
                    c.requests_per_second,
                    c.latency_ms_p50,
                    c.latency_ms_p99
                );
            }
        }
        return if r.clients.iter().any(|c| c.requests == 0) {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
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
