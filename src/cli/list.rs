//! `gambiarra list`: the rooms on a hub, or (`--code`) who is in one and what they serve.

use std::process::ExitCode;

use argh::FromArgs;

use crate::types::{ParticipantInfo, ParticipantStatus, now_ms};

/// List the rooms on a hub (code, name, participants, age, whether a password protects it),
/// or with --code the participants of one room and the models each serves.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "list",
    example = "  $ gambiarra list\n  $ gambiarra list --hub http://192.168.1.10:3000 --json\n  $ gambiarra list --code K7QF2M",
    note = "In a room's listing, \u{25cf} marks a model loaded in memory and \u{25cb} one that is not (when the participant's server says)."
)]
pub struct ListArgs {
    /// list this room's participants and their models instead of the rooms
    #[argh(option, short = 'c')]
    pub(crate) code: Option<String>,
    /// password of a protected room, with --code (default: $GAMBIARRA_PASSWORD)
    #[argh(option)]
    pub(crate) password: Option<String>,
    /// hub URL (default: $GAMBIARRA_HUB, else the one hub discovered on the LAN, else
    /// http://localhost:3000)
    #[argh(option)]
    pub(crate) hub: Option<String>,
    /// PEM CA certificate to trust for an https:// hub with a self-signed certificate
    #[argh(option)]
    pub(crate) ca: Vec<String>,
    /// print the rooms (or the participants) as JSON
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
    if let Some(code) = &args.code {
        let password = super::secret_or_env(args.password.clone(), "GAMBIARRA_PASSWORD");
        let client = client.with_password(password.as_deref());
        return match rt.block_on(client.participants(&code.to_ascii_uppercase())) {
            Ok(list) if args.json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).unwrap_or_default()
                );
                ExitCode::SUCCESS
            }
            Ok(list) => {
                print!("{}", participants_table(&list));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gambiarra list: {e}");
                ExitCode::FAILURE
            }
        };
    }
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

/// One row per participant, then one more per model after its first (`●` loaded, `○` not).
fn participants_table(list: &[ParticipantInfo]) -> String {
    use std::fmt::Write;
    if list.is_empty() {
        return "No participants in this room.\n".into();
    }
    let width = |f: fn(&ParticipantInfo) -> usize, min: usize| {
        list.iter().map(f).max().unwrap_or(0).max(min)
    };
    let (wid, wnick) = (
        width(|p| p.id.chars().count(), 2),
        width(|p| p.nickname.chars().count(), 8),
    );
    let mut out = format!(
        "{:<wid$}  {:<wnick$}  {:<7}  MODELS\n",
        "ID", "NICKNAME", "STATUS"
    );
    for p in list {
        let status = match p.status {
            ParticipantStatus::Online => "online",
            ParticipantStatus::Busy => "busy",
            ParticipantStatus::Offline => "offline",
        };
        let fallback = [crate::types::ModelInfo::named(p.model.as_str())];
        let models = if p.models.is_empty() {
            &fallback[..]
        } else {
            &p.models[..]
        };
        for (i, m) in models.iter().enumerate() {
            let mark = match m.loaded {
                Some(true) => "● ",
                Some(false) => "○ ",
                None => "",
            };
            let also = if m.aliases.is_empty() {
                String::new()
            } else {
                format!(" (also: {})", m.aliases.join(", "))
            };
            let (id, nick, st) = if i == 0 {
                (p.id.as_str(), p.nickname.as_str(), status)
            } else {
                ("", "", "")
            };
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "{id:<wid$}  {nick:<wnick$}  {st:<7}  {mark}{}{also}",
                m.name
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn participants_with_their_models() {
        use crate::types::{ModelInfo, ParticipantInfo, ParticipantStatus};
        let p = ParticipantInfo {
            id: "box".into(),
            nickname: "ana".into(),
            model: "llama3:latest".into(),
            models: vec![
                ModelInfo {
                    name: "llama3:latest".into(),
                    aliases: vec!["l3".into()],
                    loaded: Some(true),
                },
                ModelInfo {
                    loaded: Some(false),
                    ..ModelInfo::named("phi3")
                },
            ],
            protocols: Vec::new(),
            slots: None,
            endpoint: "http://x".into(),
            config: Default::default(),
            specs: Default::default(),
            status: ParticipantStatus::Busy,
            in_flight: 0,
            joined_at: 0,
            last_seen: 0,
        };
        assert_eq!(
            super::participants_table(&[p]),
            format!(
                "ID   NICKNAME  STATUS   MODELS\n\
                 box  ana       busy     ● llama3:latest (also: l3)\n\
                 {}○ phi3\n",
                " ".repeat(24)
            )
        );
        assert_eq!(
            super::participants_table(&[]),
            "No participants in this room.\n"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(super::age(5_000), "5s");
        assert_eq!(super::age(7 * 60_000), "7m");
        assert_eq!(super::age(3 * 3_600_000), "3h");
        assert_eq!(super::age(49 * 3_600_000), "2d");
    }
}
