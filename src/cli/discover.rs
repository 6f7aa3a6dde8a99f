//! `gambiarra discover`: the hubs on this network, found with mDNS.

use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

/// List the hubs advertising themselves on this network (`gambiarra serve --mdns`).
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "discover",
    example = "  $ gambiarra discover\n  $ gambiarra discover --json --timeout-ms 2000",
    note = "Commands given no --hub (and no GAMBIARRA_HUB) use the hub this finds when there is exactly one."
)]
pub struct DiscoverArgs {
    /// how long to listen for answers, in ms (default 800)
    #[argh(option, default = "crate::mdns::BROWSE_WAIT.as_millis() as u64")]
    pub(crate) timeout_ms: u64,
    /// print the hubs as JSON
    #[argh(switch)]
    pub(crate) json: bool,
}

pub(crate) fn run(args: DiscoverArgs) -> ExitCode {
    let rt = match super::runtime_with(Some(1)) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let wait = Duration::from_millis(args.timeout_ms.max(1));
    let hubs = match rt.block_on(crate::mdns::browse(wait)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("gambiarra discover: cannot send an mDNS query: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        let rows: Vec<_> = hubs
            .iter()
            .map(|h| {
                let mut v = serde_json::to_value(h).unwrap_or_default();
                v["url"] = serde_json::Value::String(h.url());
                v
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else if hubs.is_empty() {
        println!("No hubs found on this network (is one running with `gambiarra serve --mdns`?).");
    } else {
        for h in &hubs {
            println!(
                "{}  {}  {}{}",
                h.url(),
                h.instance,
                h.host.as_deref().unwrap_or(""),
                h.version
                    .as_deref()
                    .map(|v| format!("  v{v}"))
                    .unwrap_or_default()
            );
        }
    }
    ExitCode::SUCCESS
}
