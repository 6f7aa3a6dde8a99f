//! `gambiarra delete`: delete a room, as its host (with the host token `create` printed) or as
//! the hub's admin.

use std::process::ExitCode;

use argh::FromArgs;

/// Delete a room. Its participants stop at their next health check; its event streams end.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "delete",
    example = "As the room's host:\n  $ gambiarra delete --code K7QF2M --host-token 3f9c…\nAs the hub's admin:\n  $ GAMBIARRA_ADMIN_TOKEN=… gambiarra delete --code K7QF2M"
)]
pub struct DeleteArgs {
    /// room code
    #[argh(option, short = 'c')]
    pub(crate) code: String,
    /// the room's host token, printed by `create` (default: $GAMBIARRA_HOST_TOKEN)
    #[argh(option)]
    pub(crate) host_token: Option<String>,
    /// the hub's admin token instead (default: $GAMBIARRA_ADMIN_TOKEN)
    #[argh(option)]
    pub(crate) admin_token: Option<String>,
    /// hub URL (default: $GAMBIARRA_HUB, else the one hub discovered on the LAN, else
    /// http://localhost:3000)
    #[argh(option)]
    pub(crate) hub: Option<String>,
    /// PEM CA certificate to trust for an https:// hub with a self-signed certificate
    #[argh(option)]
    pub(crate) ca: Vec<String>,
}

pub(crate) fn run(args: DeleteArgs) -> ExitCode {
    let (client, rt) = match super::hub_session("delete", args.hub.clone(), &args.ca) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let client = client.with_admin_token(
        super::secret_or_env(args.admin_token.clone(), "GAMBIARRA_ADMIN_TOKEN").as_deref(),
    );
    let host_token = super::secret_or_env(args.host_token.clone(), "GAMBIARRA_HOST_TOKEN");
    let code = args.code.to_ascii_uppercase();
    match rt.block_on(client.delete_room(&code, host_token.as_deref())) {
        Ok(()) => {
            println!("Room {code} deleted.");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gambiarra delete: {e}");
            ExitCode::FAILURE
        }
    }
}
