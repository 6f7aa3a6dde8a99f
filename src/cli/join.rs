//! `gambiarra join`: share a local model server's models in a room, until Ctrl+C / SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use crate::client::agent::{self, AgentEvent};
use crate::client::backend::{self, Listing, Sharing};
use crate::client::{JoinRequest, specs};
use crate::types::HEALTH_CHECK_INTERVAL_MS;

/// Share your local models in a room: probe the server, register them, keep them registered
/// and in step with what the server has.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "join",
    example = "Share Ollama's llama3 in room K7QF2M:\n  $ gambiarra join --code K7QF2M --model llama3\nEverything Ollama has, llama3 first, also answering to \"l3\":\n  $ gambiarra join --code K7QF2M --all-models --model llama3 --alias l3=llama3\nLM Studio, with a nickname, on another hub:\n  $ gambiarra join --code K7QF2M --model qwen2.5-7b-instruct --endpoint http://localhost:1234 --nickname ana --hub http://192.168.1.10:3000",
    note = "Every --probe-interval-ms the server's models are listed again and the room is told what was pulled, removed, loaded or unloaded. Ctrl+C (or SIGTERM) leaves the room before exiting."
)]
pub struct JoinArgs {
    /// room code
    #[argh(option, short = 'c')]
    pub(crate) code: String,
    /// a model to share, as your server names it (e.g. llama3:8b); repeat for several, the
    /// first is the primary (what requests for your id or "*" get)
    #[argh(option, short = 'm')]
    pub(crate) model: Vec<String>,
    /// share every model the server lists (Ollama /api/tags, LM Studio, else /v1/models),
    /// following what it gains and loses
    #[argh(switch)]
    pub(crate) all_models: bool,
    /// another name a model answers to in the room, ALIAS=MODEL (e.g.
    /// llama3=meta-llama-3-8b-instruct); repeatable
    #[argh(option)]
    pub(crate) alias: Vec<String>,
    /// requests your server runs at once; the hub sends no more and queues the rest
    /// (default: what llama.cpp's server reports on /props, else the hub's default, 4)
    #[argh(option)]
    pub(crate) parallel: Option<u32>,
    /// how often to list the server's models again, in ms (default 60000; 0: never)
    #[argh(option, default = "60_000")]
    pub(crate) probe_interval_ms: u64,
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
    /// skip asking the endpoint for its models (share the --model names as given; no
    /// loaded/unloaded information)
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

/// What to share, from the flags; `Err` says what is wrong with them.
fn sharing(args: &JoinArgs) -> Result<Sharing, String> {
    if args.model.is_empty() && !args.all_models {
        return Err("say what to share: --model NAME (repeatable) or --all-models".into());
    }
    if args.all_models && args.no_probe {
        return Err("--all-models needs to ask the server for its models: drop --no-probe".into());
    }
    let aliases = args
        .alias
        .iter()
        .map(|a| Sharing::parse_alias(a))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Sharing {
        models: args.model.clone(),
        all: args.all_models,
        aliases,
    })
}

/// Ask the server what it has (unless `--no-probe`) and choose what to register; `Err` is the
/// message to exit with.
async fn first_look(
    args: &JoinArgs,
    sharing: &Sharing,
) -> Result<(Option<Listing>, Vec<crate::types::ModelInfo>), String> {
    let listing = if args.no_probe {
        None
    } else {
        Some(
            backend::list(&args.endpoint)
                .await
                .map_err(|e| e.to_string())?,
        )
    };
    let chosen = sharing.choose(listing.as_ref());
    let available = || listing.as_ref().map(Listing::names).unwrap_or_default();
    if let Some(model) = chosen.missing.first() {
        return Err(backend::ProbeError::UnknownModel {
            model: model.clone(),
            available: available(),
        }
        .to_string());
    }
    if !chosen.orphan_aliases.is_empty() {
        return Err(format!(
            "--alias {}: the model is not shared (aliases name a model given with --model, or one the server lists with --all-models)",
            chosen.orphan_aliases.join(", ")
        ));
    }
    for (name, why) in &chosen.left_out {
        eprintln!("! Not sharing {}: {why}", backend::printable(name));
    }
    if chosen.models.is_empty() {
        return Err(format!("{} lists no models to share", args.endpoint));
    }
    Ok((listing, chosen.models))
}

pub(crate) fn run(args: JoinArgs) -> ExitCode {
    let sharing = match sharing(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gambiarra join: {e}");
            return ExitCode::from(2);
        }
    };
    if args
        .parallel
        .is_some_and(|n| n == 0 || n > crate::hub::api::MAX_SLOTS)
    {
        eprintln!(
            "gambiarra join: --parallel must be between 1 and {}",
            crate::hub::api::MAX_SLOTS
        );
        return ExitCode::from(2);
    }
    let (hub, rt) = match super::hub_session("join", args.hub.clone(), &args.ca) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let password = super::secret_or_env(args.password.clone(), "GAMBIARRA_PASSWORD");
    let hub = hub.with_password(password.as_deref());
    rt.block_on(async move {
        let (listing, models) = match first_look(&args, &sharing).await {
            Ok(found) => found,
            Err(e) => {
                eprintln!("gambiarra join: {e}");
                return ExitCode::FAILURE;
            }
        };
        let shown = crate::cli::monitor::model::models_summary(&models);
        let protocols = match &listing {
            Some(l) => backend::protocols(&args.endpoint, l.flavor).await,
            None => Vec::new(),
        };
        match &listing {
            Some(l) if !protocols.is_empty() => println!(
                "✓ {} ({}) serves {shown}; besides OpenAI's API it speaks {}",
                args.endpoint,
                l.flavor.name(),
                protocols
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(l) => println!("✓ {} ({}) serves {shown}", args.endpoint, l.flavor.name()),
            None => println!("  Sharing {shown} (not checked: --no-probe)"),
        }
        let slots = match (args.parallel, &listing) {
            (Some(n), _) => Some(n),
            (None, Some(_)) => backend::slots(&args.endpoint).await,
            (None, None) => None,
        };
        match (args.parallel, slots) {
            (None, Some(n)) => println!("✓ It runs {n} requests at once (its /props)"),
            (Some(n), _) => println!("  It runs {n} requests at once (--parallel)"),
            _ => {}
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
        let primary = models[0].name.clone();
        // MODEL@<6 characters of the id>, within the hub's 128 characters.
        let nickname = args.nickname.clone().unwrap_or_else(|| {
            let model: String = primary.chars().take(100).collect();
            format!("{model}@{}", id.chars().take(6).collect::<String>())
        });
        let request = JoinRequest {
            id,
            nickname,
            model: primary,
            // One model without aliases is the seed's registration: no list needed.
            models: if models.len() == 1
                && models[0].aliases.is_empty()
                && models[0].loaded.is_none()
            {
                Vec::new()
            } else {
                models
            },
            protocols,
            slots,
            endpoint: args.endpoint.clone(),
            specs,
            config: None,
            participant_secret: None,
            // Sent as `Authorization: Bearer` by the client on every call, and in the join
            // body too, where hubs of the TypeScript version look for it.
            password: password.clone(),
            tunnel: !args.direct,
        };
        let options = agent::Options {
            interval: Duration::from_millis(args.health_interval_ms.max(10)),
            tunnels: args.tunnels,
            reprobe: listing
                .filter(|_| args.probe_interval_ms > 0)
                .map(|l| agent::Reprobe {
                    every: Duration::from_millis(args.probe_interval_ms.max(100)),
                    sharing: sharing.clone(),
                    flavor: l.flavor,
                }),
        };
        let code = args.code.to_ascii_uppercase();
        let result = agent::run(
            &hub,
            &code,
            &request,
            &options,
            super::wait_for_signal(),
            |event| match event {
                AgentEvent::Joined(p) => {
                    println!("✓ Joined room {code} as {} (id {})", p.nickname, p.id);
                    println!(
                        "  Anyone in the room can now use {} at {}",
                        crate::cli::monitor::model::models_line(&p),
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
                AgentEvent::Dropped(dropped) => {
                    for d in dropped {
                        eprintln!(
                            "! The hub left out {}: {}",
                            backend::printable(&d.name),
                            backend::printable(&d.reason)
                        );
                    }
                }
                AgentEvent::ModelsChanged {
                    added,
                    removed,
                    loaded,
                    unloaded,
                } => {
                    for (what, names) in [
                        ("+ Now sharing", added),
                        ("- No longer sharing", removed),
                        ("● Loaded", loaded),
                        ("○ Unloaded", unloaded),
                    ] {
                        if !names.is_empty() {
                            println!("{what} {}", names.join(", "));
                        }
                    }
                }
                AgentEvent::Missing(names) if names.is_empty() => {
                    println!("✓ The server lists every model named again.")
                }
                AgentEvent::Missing(names) => eprintln!(
                    "! The server no longer lists {}: not shared until it does",
                    names.join(", ")
                ),
                AgentEvent::ProbeFailed(e) => {
                    eprintln!("! Cannot list the server's models ({e}); keeping the last list")
                }
                AgentEvent::ProbeRecovered => println!("✓ The server lists its models again."),
                AgentEvent::UpdateFailed(e) => {
                    eprintln!("! The hub did not take the new model list ({e}); trying again later")
                }
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
