//! `gambiarra create`: create a room and print its code.

use std::process::ExitCode;

use argh::FromArgs;

/// Create a room; prints its code and id.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "create",
    example = "  $ gambiarra create --name \"Hack night\"\n  $ gambiarra create --name Lab --hub http://192.168.1.10:3000 --json"
)]
pub struct CreateArgs {
    /// room name
    #[argh(option, short = 'n')]
    pub(crate) name: String,
    /// protect the room with this password: joining and using it then needs it
    /// (default: $GAMBIARRA_PASSWORD if set)
    #[argh(option)]
    pub(crate) password: Option<String>,
    /// the hub's admin token, if it requires one to create rooms
    /// (default: $GAMBIARRA_ADMIN_TOKEN)
    #[argh(option)]
    pub(crate) admin_token: Option<String>,
    /// hub URL (default: $GAMBIARRA_HUB, else the one hub discovered on the LAN, else
    /// http://localhost:3000)
    #[argh(option)]
    pub(crate) hub: Option<String>,
    /// PEM CA certificate to trust for an https:// hub with a self-signed certificate
    #[argh(option)]
    pub(crate) ca: Vec<String>,
    /// how the room picks a participant: cache-aware (where the prompt's prefix was last
    /// sent, so the server's KV cache is reused) or least-loaded (default: the hub's --routing)
    #[argh(option)]
    pub(crate) routing: Option<crate::types::Routing>,
    /// print the hub's answer as JSON
    #[argh(switch)]
    pub(crate) json: bool,
}

pub(crate) fn run(args: CreateArgs) -> ExitCode {
    let (client, rt) = match super::hub_session("create", args.hub.clone(), &args.ca) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let client = client.with_admin_token(
        super::secret_or_env(args.admin_token.clone(), "GAMBIARRA_ADMIN_TOKEN").as_deref(),
    );
    let password = super::secret_or_env(args.password.clone(), "GAMBIARRA_PASSWORD");
    if args.json {
        // The hub's answer as it was sent, not re-serialised from what this version knows.
        return match rt.block_on(client.create_room_routed_raw(
            &args.name,
            password.as_deref(),
            args.routing,
        )) {
            Ok(raw) => {
                println!("{}", raw.trim_end());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("gambiarra create: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match rt.block_on(client.create_room_routed(&args.name, password.as_deref(), args.routing)) {
        Ok(created) => {
            println!("Room created: {}", created.room.name);
            println!("  code:        {}", created.room.code);
            println!("  id:          {}", created.room.id);
            if created.room.password_protected {
                println!("  protected:   yes (clients send the password as their API key)");
            }
            if let Some(routing) = created.room.routing {
                println!("  routing:     {}", routing.name());
            }
            if let Some(token) = &created.host_token {
                println!("  host token:  {token}");
                println!(
                    "               (keep it: `gambiarra delete --code {} --host-token …` removes the room)",
                    created.room.code
                );
            }
            println!(
                "  OpenAI base: {}",
                client.openai_base_url(&created.room.code)
            );
            // With the hub the user named, so the line can be pasted as it is.
            let hub = args
                .hub
                .as_deref()
                .map(|h| format!(" --hub {h}"))
                .unwrap_or_default();
            println!(
                "Join it with: gambiarra join --code {} --model MODEL{hub}",
                created.room.code
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gambiarra create: {e}");
            ExitCode::FAILURE
        }
    }
}
