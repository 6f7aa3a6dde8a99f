//! `gambiarra join`: share a local model in a room, until Ctrl+C / SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use crate::client::agent::{self, AgentEvent};
use crate::client::{JoinRequest, specs};
use crate::types::HEALTH_CHECK_INTERVAL_MS;

/// Share your local model in a room: probe it, register it, keep it registered.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "join",
    example = "Share Ollama's llama3 in room K7QF2M:\n  $ gambiarra join --code K7QF2M --model llama3\nLM Studio, with a nickname, on another hub:\n  $ gambiarra join --code K7QF2M --model qwen2.5-7b-instruct --endpoint http://localhost:1234 --nickname ana --hub http://192.168.1.10:3000",
    note = "Ctrl+C (or SIGTERM) leaves the room before exiting."
)]
pub struct JoinArgs {
    /// room code
    #[argh(option, short = 'c')]
    pub(crate) code: String,
    /// the model to share, as your server names it (e.g. llama3:8b)
    #[argh(option, short = 'm')]
    pub(crate) model: String,
    /// your OpenAI-compatible server (default http://localhost:11434, Ollama)
    #[argh(
        option,
        short = 'e',
        default = "String::from(\"http://localhost:11434\")"
    )]
    pub(crate) endpoint: String,
    /// display name (default MODEL@<first 6 characters of the id>)
    #[argh(option)]
    pub(crate) nickname: Option<String>,
    /// participant id, to keep the same identity across runs (default: a new UUID)
    #[argh(option)]
    pub(crate) id: Option<String>,
    /// password of a protected room (default: $GAMBIARRA_PASSWORD)
    #[argh(option)]
    pub(crate) password: Option<String>,
    /// hub URL (default: $GAMBIARRA_HUB, else the one hub discovered on the LAN, else
    /// http://localhost:3000)
    #[argh(option)]
    pub(crate) hub: Option<String>,
    /// PEM CA certificate to trust for an https:// hub with a self-signed certificate
    #[argh(option)]
    pub(crate) ca: Vec<String>,
    /// do not detect and share CPU/RAM/GPU specs
    #[argh(switch)]
    pub(crate) no_specs: bool,
    /// skip checking that the endpoint serves the model
    #[argh(switch)]
    pub(crate) no_probe: bool,
    /// let the hub connect to --endpoint directly instead of through tunnels this agent opens
    /// (needs an endpoint the hub can reach)
    #[argh(switch)]
    pub(crate) direct: bool,
    /// tunnel connections kept open to the hub (default 4)
    #[argh(option, default = "crate::client::tunnel::TUNNEL_POOL")]
    pub(crate) tunnels: usize,
    /// health-check interval in ms (default 10000)
    #[argh(option, default = "HEALTH_CHECK_INTERVAL_MS")]
    pub(crate) health_interval_ms: u64,
}

pub(crate) fn run(args: JoinArgs) -> ExitCode {
    let (hub, rt) = match super::hub_session("join", args.hub.clone(), &args.ca) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let password = super::secret_or_env(args.password.clone(), "GAMBIARRA_PASSWORD");
    let hub = hub.with_password(password.as_deref());
    rt.block_on(async move {
        if !args.no_probe {
            if let Err(e) = agent::probe(&args.endpoint, &args.model).await {
                eprintln!("gambiarra join: {e}");
                return ExitCode::FAILURE;
            }
            println!("✓ {} serves {}", args.endpoint, args.model);
        }
        let specs = if args.no_specs {
            None
        } else {
            let s = tokio::task::spawn_blocking(specs::detect)
                .await
                .unwrap_or_default();
            for line in specs::describe(&s) {
                println!("  {line}");
            }
            Some(s)
        };
        let id = match args
            .id
            .clone()
            .map_or_else(crate::hub::rooms::ids::uuid_v4, Ok)
        {
            Ok(id) => id,
            Err(e) => {
                eprintln!("gambiarra join: cannot make an id: {e}");
                return ExitCode::FAILURE;
            }
        };
        let nickname = args.nickname.clone().unwrap_or_else(|| {
            format!("{}@{}", args.model, id.chars().take(6).collect::<String>())
        });
        let request = JoinRequest {
            id,
            nickname,
            model: args.model.clone(),
            endpoint: args.endpoint.clone(),
            specs,
            config: None,
            participant_secret: None,
            // Sent as `Authorization: Bearer` by the client on every call, and in the join
            // body too, where hubs of the TypeScript version look for it.
            password: password.clone(),
            tunnel: !args.direct,
        };
        let code = args.code.to_ascii_uppercase();
        let interval = Duration::from_millis(args.health_interval_ms.max(10));
        let result = agent::run(
            &hub,
            &code,
            &request,
            interval,
            args.tunnels,
            super::wait_for_signal(),
            |event| match event {
                AgentEvent::Joined(p) => {
                    println!("✓ Joined room {code} as {} (id {})", p.nickname, p.id);
                    println!(
                        "  Anyone in the room can now use {} at {}",
                        p.model,
                        hub.openai_base_url(&code)
                    );
                    println!("  Press Ctrl+C to leave.");
                }
                AgentEvent::Rejoined(_) => println!(
                    "↻ The hub had forgotten this participant (restarted?); re-joined room {code}."
                ),
                AgentEvent::HealthFailed { error, retry_in } => {
                    eprintln!(
                        "! Health check failed ({error}); retrying in {:.1}s",
                        retry_in.as_secs_f64()
                    )
                }
                AgentEvent::Recovered => println!("✓ Hub reachable again."),
                AgentEvent::TunnelsUnsupported => eprintln!(
                    "! This hub does not offer tunnels (it sent no tunnel secret): serving \
                     directly, so the hub must be able to reach {}",
                    args.endpoint
                ),
                AgentEvent::RejoinFailed { error, retry_in } => {
                    eprintln!(
                        "! Could not re-join room {code} ({error}); retrying in {:.1}s",
                        retry_in.as_secs_f64()
                    )
                }
                AgentEvent::Left => println!("✓ Left room {code}."),
                AgentEvent::RoomRemoved => {
                    println!("✗ Room {code} was deleted by its host; stopping.")
                }
                AgentEvent::LeaveFailed(e) => eprintln!("! Could not leave cleanly: {e}"),
            },
        )
        .await;
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("gambiarra join: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
