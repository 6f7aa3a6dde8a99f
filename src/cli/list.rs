//! `gambiarra list`: the rooms on a hub.

use std::process::ExitCode;

use argh::FromArgs;

use crate::types::now_ms;

/// List the rooms on a hub: code, name, participants, age, whether a password protects it.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "list",
    example = "  $ gambiarra list\n  $ gambiarra list --hub http://192.168.1.10:3000 --json"
)]
pub struct ListArgs {
    /// hub URL (default: $GAMBIARRA_HUB, else the one hub discovered on the LAN, else
    /// http://localhost:3000)
    #[argh(option)]
    pub(crate) hub: Option<String>,
    /// PEM CA certificate to trust for an https:// hub with a self-signed certificate
    #[argh(option)]
    pub(crate) ca: Vec<String>,
    /// print the rooms as JSON
    #[argh(switch)]
    pub(crate) json: bool,
}

/// "42s", "7m", "3h", "2d".
pub(crate) fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

pub(crate) fn run(args: ListArgs) -> ExitCode {
    let (client, rt) = match super::hub_session("list", args.hub.clone(), &args.ca) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let rooms = match rt.block_on(client.list_rooms()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gambiarra list: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rooms).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    if rooms.is_empty() {
        println!("No rooms available.");
        return ExitCode::SUCCESS;
    }
    let now = now_ms();
    let width = rooms
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<6}  {:<width$}  {:>12}  {:>5}  PASSWORD",
        "CODE", "NAME", "PARTICIPANTS", "AGE"
    );
    for r in &rooms {
        println!(
            "{:<6}  {:<width$}  {:>12}  {:>5}  {}",
            r.code,
            r.name,
            r.participant_count,
            age(now.saturating_sub(r.created_at)),
            if r.password_protected { "yes" } else { "-" }
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages() {
        assert_eq!(super::age(5_000), "5s");
        assert_eq!(super::age(7 * 60_000), "7m");
        assert_eq!(super::age(3 * 3_600_000), "3h");
        assert_eq!(super::age(49 * 3_600_000), "2d");
    }
}
