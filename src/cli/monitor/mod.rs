//! `gambiarra monitor`: watch rooms live. `--plain` (and any stdout that is not a terminal)
//! prints one line per event; otherwise a terminal UI (feature `tui`).
//!
//! - [`model`]: what the monitor knows (rooms, participant cards, the log), UI-free.
//! - [`feed`]: hub events into that model: following rooms' streams, resolving room codes.
//! - [`plain`]: the line-per-event printer.
//! - `tui`: the terminal UI.

pub(crate) mod feed;
pub(crate) mod model;
mod plain;
#[cfg(feature = "tui")]
mod tui;

use std::io::IsTerminal;
use std::process::ExitCode;

use argh::FromArgs;

/// Watch rooms live: participants, their status and every request.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "monitor",
    example = "Watch one room in the terminal UI:\n  $ gambiarra monitor --room K7QF2M\nOne line per event, for scripts and logs:\n  $ gambiarra monitor --room K7QF2M --plain",
    note = "Without --room, --plain watches every room on the hub and the terminal UI offers a room picker."
)]
pub struct MonitorArgs {
    /// hub URL (default: $GAMBIARRA_HUB, else the one hub discovered on the LAN, else
    /// http://localhost:3000)
    #[argh(option)]
    pub(crate) hub: Option<String>,
    /// PEM CA certificate to trust for an https:// hub with a self-signed certificate
    #[argh(option)]
    pub(crate) ca: Vec<String>,
    /// password of a protected room (default: $GAMBIARRA_PASSWORD)
    #[argh(option)]
    pub(crate) password: Option<String>,
    /// room to watch (repeatable)
    #[argh(option, short = 'r')]
    pub(crate) room: Vec<String>,
    /// print one line per event instead of the terminal UI
    #[argh(switch)]
    pub(crate) plain: bool,
}

pub(crate) fn run(args: MonitorArgs) -> ExitCode {
    let (hub, rt) = match crate::cli::hub_session("monitor", args.hub.clone(), &args.ca) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let password = crate::cli::secret_or_env(args.password.clone(), "GAMBIARRA_PASSWORD");
    let hub = hub.with_password(password.as_deref());
    let plain = args.plain || !std::io::stdout().is_terminal() || !cfg!(feature = "tui");
    if plain {
        rt.block_on(plain::run(hub, args.room))
    } else {
        #[cfg(feature = "tui")]
        {
            rt.block_on(tui::run(hub, args.room))
        }
        #[cfg(not(feature = "tui"))]
        {
            unreachable!("plain is forced without the tui feature")
        }
    }
}
