//! `gambiarra serve`: run a hub until SIGINT/SIGTERM, then shut down gracefully.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use crate::http::limits;
use crate::hub::{self, Hub, HubConfig};
use crate::types::{HEALTH_CHECK_INTERVAL_MS, PARTICIPANT_TIMEOUT_MS};

/// Run a hub: the rooms API, the event streams and the OpenAI-compatible proxy.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "serve",
    example = "Serve on every interface, port 3000:\n  $ gambiarra serve\nOnly on this machine, port 8080, quietly:\n  $ gambiarra serve --host 127.0.0.1 --port 8080 --quiet"
)]
pub struct ServeArgs {
    /// address to listen on (default 0.0.0.0; use :: for IPv6)
    #[argh(option, default = "String::from(\"0.0.0.0\")")]
    pub(crate) host: String,
    /// port to listen on (default 3000; 0 picks a free one)
    #[argh(option, short = 'p', default = "3000")]
    pub(crate) port: u16,
    /// print only warnings and errors
    #[argh(switch, short = 'q')]
    pub(crate) quiet: bool,
    /// log every request
    #[argh(switch, short = 'v')]
    pub(crate) verbose: bool,
    /// most connections served at once; more get 503 (default 10000)
    #[argh(option, default = "limits::DEFAULT_MAX_CONNECTIONS")]
    pub(crate) max_connections: usize,
    /// expected interval of participants' health checks in ms (default 10000)
    #[argh(option, default = "HEALTH_CHECK_INTERVAL_MS")]
    pub(crate) health_interval_ms: u64,
    /// silence in ms after which a participant is offline (default 30000)
    #[argh(option, default = "PARTICIPANT_TIMEOUT_MS")]
    pub(crate) participant_timeout_ms: u64,
    /// most rooms on this hub (default 10000)
    #[argh(option, default = "hub::DEFAULT_MAX_ROOMS")]
    pub(crate) max_rooms: usize,
    /// most rooms one address may have at once; the admin is not bounded (default 64; 0: no
    /// bound)
    #[argh(option, default = "hub::DEFAULT_MAX_ROOMS_PER_IP")]
    pub(crate) max_rooms_per_ip: usize,
    /// silence in ms after which a participant is forgotten: removed, announced as left
    /// (default an hour, or the participant timeout if that is longer)
    #[argh(option)]
    pub(crate) forget_after_ms: Option<u64>,
    /// most participants in one room (default 1000)
    #[argh(option, default = "hub::DEFAULT_MAX_PARTICIPANTS")]
    pub(crate) max_participants: usize,
    /// most event-stream subscribers on one room (default 1000)
    #[argh(option, default = "hub::DEFAULT_MAX_SUBSCRIBERS")]
    pub(crate) max_subscribers: usize,
    /// most event-stream subscribers on the whole hub (default 10000)
    #[argh(option, default = "hub::DEFAULT_MAX_SUBSCRIBERS_TOTAL")]
    pub(crate) max_subscribers_total: usize,
    /// most connections open at once from one address (IPv6: one /64); more get 429
    /// (default 512; 0: no bound)
    #[argh(option, default = "limits::DEFAULT_MAX_CONNECTIONS_PER_IP")]
    pub(crate) max_connections_per_ip: usize,
    /// control-route requests per second per address, everything but /v1 and tunnels;
    /// more get 429 (default 50; 0: no bound)
    #[argh(option, default = "hub::DEFAULT_CONTROL_RATE")]
    pub(crate) rate_limit: f64,
    /// control-route requests an address may burst above --rate-limit (default 200)
    #[argh(option, default = "hub::DEFAULT_CONTROL_BURST")]
    pub(crate) rate_burst: u32,
    /// require this token (Authorization: Bearer) to create and delete rooms and to read
    /// /metrics; also read from GAMBIARRA_ADMIN_TOKEN, which keeps it out of `ps`
    #[argh(option)]
    pub(crate) admin_token: Option<String>,
    /// time a participant may take to start answering, in ms (default 300000)
    #[argh(option, default = "hub::TTFB_TIMEOUT.as_millis() as u64")]
    pub(crate) ttfb_timeout_ms: u64,
    /// worker threads (default: one per CPU core; 1 suits small devices)
    #[argh(option)]
    pub(crate) threads: Option<usize>,
    /// serve HTTPS: PEM certificate chain (with --tls-key)
    #[argh(option)]
    pub(crate) tls_cert: Option<String>,
    /// serve HTTPS: PEM private key (with --tls-cert)
    #[argh(option)]
    pub(crate) tls_key: Option<String>,
    /// save rooms to this file on every change and load them at start (default: in memory)
    #[argh(option)]
    pub(crate) state: Option<String>,
    /// advertise the hub on the LAN with mDNS as gambiarra-hub-PORT._gambiarra._tcp.local,
    /// so `gambiarra discover` and commands without --hub find it
    #[argh(switch)]
    pub(crate) mdns: bool,
    /// memory for request bodies across the hub, in MiB; a body that would go past
    /// it gets 503 before it is read (default 64)
    #[argh(option, default = "(limits::DEFAULT_BODY_MEMORY >> 20) as u64")]
    pub(crate) max_body_memory_mb: u64,
    /// time a whole request body may take to arrive, in ms (default 120000)
    #[argh(option, default = "limits::BODY_DEADLINE.as_millis() as u64")]
    pub(crate) body_deadline_ms: u64,
    /// allow direct participant endpoints only in this network (CIDR, e.g. 192.168.1.0/24;
    /// repeatable); local addresses of this machine are for participants on it in any case
    #[argh(option)]
    pub(crate) allow_endpoint: Vec<String>,
    /// most reverse-tunnel sockets parked across the hub, each also counted as a connection
    /// of its address (default 4096)
    #[argh(option, default = "hub::proxy::tunnel::MAX_PARKED_TOTAL")]
    pub(crate) max_tunnels: usize,
    /// PEM file of extra CA certificates to trust for https:// participant endpoints
    /// (e.g. a participant's self-signed certificate); repeatable
    #[argh(option)]
    pub(crate) upstream_ca: Vec<String>,
    /// requests a participant runs at once when it does not say (`join --parallel`, or what
    /// its server reports); the hub never sends it more and queues the rest (default 4)
    #[argh(option, default = "hub::DEFAULT_SLOTS")]
    pub(crate) default_slots: u32,
    /// how rooms created without a choice pick a participant: cache-aware (where the
    /// request's prompt prefix was last sent, so the backend's KV cache is reused) or
    /// least-loaded (default cache-aware)
    #[argh(option, default = "crate::types::Routing::CacheAware")]
    pub(crate) routing: crate::types::Routing,
    /// most requests waiting for a slot in one room; more get 503 with Retry-After
    /// (default 256)
    #[argh(option, default = "hub::rooms::queue::DEFAULT_QUEUE_MAX")]
    pub(crate) queue_max: usize,
    /// most requests one client (API key, else address) may have waiting in one room; more
    /// get 429 with Retry-After (default 64)
    #[argh(option, default = "hub::rooms::queue::DEFAULT_QUEUE_PER_CLIENT")]
    pub(crate) queue_per_client: usize,
    /// most requests one address (IPv6: one /64) may have waiting in one room, whatever API
    /// keys it sends; more get 429 with Retry-After (default 128)
    #[argh(option, default = "hub::rooms::queue::DEFAULT_QUEUE_PER_ADDRESS")]
    pub(crate) queue_per_address: usize,
    /// longest a request waits in a room's queue, in seconds; then 503 with Retry-After
    /// (default 60)
    #[argh(option, default = "hub::rooms::queue::DEFAULT_QUEUE_TIMEOUT.as_secs()")]
    pub(crate) queue_timeout: u64,
    /// longest a queued request may be passed over by others, in ms, while it waits for the
    /// busy participant that holds its prompt prefix (cache-aware rooms; a free slot nobody
    /// else takes it takes at once; 0: never waits; default 1500)
    #[argh(option, default = "hub::AFFINITY_WAIT.as_millis() as u64")]
    pub(crate) affinity_wait_ms: u64,
    /// the hub's address as people reach it, e.g. https://ai.example.org behind a reverse
    /// proxy: what room pages, their QR codes and snippets show (default: the address the
    /// browser used, or this machine's LAN address when that was localhost)
    #[argh(option)]
    pub(crate) public_url: Option<String>,
}

impl ServeArgs {
    fn config(&self) -> Result<HubConfig, String> {
        let mut config = HubConfig {
            upstream_roots: super::load_certs(&self.upstream_ca, "--upstream-ca")?,
            state_file: self.state.clone().map(Into::into),
            ..HubConfig::default()
        };
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                use rustls::pki_types::PrivateKeyDer;
                use rustls::pki_types::pem::PemObject;
                let chain = super::load_certs(std::slice::from_ref(cert), "--tls-cert")?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("--tls-key {key}: {e}"))?;
                config.server.tls = Some(
                    crate::http::server::tls_acceptor(chain, key_der)
                        .map_err(|e| format!("TLS certificate and key: {e}"))?,
                );
            }
            (None, None) => {}
            _ => return Err("--tls-cert and --tls-key go together".into()),
        }
        let ms = Duration::from_millis;
        config.server.max_connections =
            within("--max-connections", self.max_connections, 1, MILLION)?;
        config.health_interval = ms(within(
            "--health-interval-ms",
            self.health_interval_ms,
            100,
            DAY_MS,
        )?);
        config.participant_timeout = ms(within(
            "--participant-timeout-ms",
            self.participant_timeout_ms,
            1_000,
            DAY_MS,
        )?);
        if config.participant_timeout < config.health_interval {
            return Err("--participant-timeout-ms must be at least --health-interval-ms".into());
        }
        config.ttfb_timeout = ms(within(
            "--ttfb-timeout-ms",
            self.ttfb_timeout_ms,
            1_000,
            DAY_MS,
        )?);
        config.max_rooms = within("--max-rooms", self.max_rooms, 1, MILLION)?;
        config.max_rooms_per_ip = within("--max-rooms-per-ip", self.max_rooms_per_ip, 0, MILLION)?;
        config.forget_after = match self.forget_after_ms {
            Some(f) => ms(within("--forget-after-ms", f, 1_000, 30 * DAY_MS)?),
            None => hub::FORGET_AFTER.max(config.participant_timeout),
        };
        if config.forget_after < config.participant_timeout {
            return Err("--forget-after-ms must be at least --participant-timeout-ms".into());
        }
        config.max_participants_per_room =
            within("--max-participants", self.max_participants, 1, MILLION)?;
        config.max_subscribers_per_room =
            within("--max-subscribers", self.max_subscribers, 1, MILLION)?;
        config.max_subscribers = within(
            "--max-subscribers-total",
            self.max_subscribers_total,
            1,
            MILLION,
        )?;
        config.server.max_connections_per_ip = within(
            "--max-connections-per-ip",
            self.max_connections_per_ip,
            0,
            MILLION,
        )?;
        // 0 turns the limit off; otherwise at least one request per 100 s (a smaller rate would
        // make the wait for the next token overflow any clock), at most a million per second.
        let rate = self.rate_limit;
        if !(rate == 0.0 || (0.01..=1e6).contains(&rate)) {
            return Err(format!(
                "--rate-limit must be 0 (off) or between 0.01 and 1000000 requests per second, not {rate}"
            ));
        }
        config.control_rate = rate;
        config.control_burst = within("--rate-burst", self.rate_burst, 1, 1_000_000)?;
        let body_mb = within("--max-body-memory-mb", self.max_body_memory_mb, 16, 1 << 20)?;
        config.server.body_memory = usize::try_from(body_mb << 20).unwrap_or(usize::MAX);
        config.server.body_deadline = ms(within(
            "--body-deadline-ms",
            self.body_deadline_ms,
            1_000,
            DAY_MS,
        )?);
        for cidr in &self.allow_endpoint {
            config
                .endpoint_rules
                .allowed
                .push(cidr.parse().map_err(|e| format!("--allow-endpoint {e}"))?);
        }
        config.max_tunnels = within("--max-tunnels", self.max_tunnels, 0, MILLION)?;
        config.default_slots = within(
            "--default-slots",
            self.default_slots,
            1,
            hub::api::MAX_SLOTS,
        )?;
        config.routing = self.routing;
        config.queue_max = within("--queue-max", self.queue_max, 0, MILLION)?;
        config.queue_per_client = within("--queue-per-client", self.queue_per_client, 0, MILLION)?;
        config.queue_per_address =
            within("--queue-per-address", self.queue_per_address, 0, MILLION)?;
        config.queue_timeout =
            Duration::from_secs(within("--queue-timeout", self.queue_timeout, 1, 86_400)?);
        config.affinity_wait = ms(within(
            "--affinity-wait-ms",
            self.affinity_wait_ms,
            0,
            600_000,
        )?);
        config.public_url = self.public_url.as_deref().map(public_url).transpose()?;
        if let Some(t) = self.threads {
            within("--threads", t, 1, 1024)?;
        }
        config.admin_token = self
            .admin_token
            .clone()
            .or_else(|| std::env::var("GAMBIARRA_ADMIN_TOKEN").ok())
            .filter(|t| !t.is_empty());
        if config.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err("the admin token must be at least 16 characters".into());
        }
        Ok(config)
    }

    fn addr(&self) -> Result<SocketAddr, String> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        (host, self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve --host {}: {e}", self.host))?
            .next()
            .ok_or_else(|| format!("--host {} resolves to no address", self.host))
    }
}

/// `--public-url`: an http(s) origin, without a path (the pages link to `/ui/…` and
/// `/rooms/…` from the root).
fn public_url(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim_end_matches('/');
    let url = crate::http::url::parse(trimmed).map_err(|e| format!("--public-url {raw}: {e}"))?;
    if !url.path.is_empty() || trimmed.contains(['?', '#']) {
        return Err(format!(
            "--public-url {raw}: only scheme, host and port (the hub serves from its root)"
        ));
    }
    Ok(trimmed.to_string())
}

const MILLION: usize = 1_000_000;
const DAY_MS: u64 = 86_400_000;

/// `value` if it lies in `lo..=hi`, else an error naming the flag and its range.
fn within<T: PartialOrd + std::fmt::Display + Copy>(
    flag: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<T, String> {
    if value < lo || value > hi {
        return Err(format!("{flag} must be between {lo} and {hi}, not {value}"));
    }
    Ok(value)
}

/// Large allocations (an Argon2 hash's 19 MiB, big request bodies) straight from `mmap`, so
/// freeing them gives the memory back. glibc otherwise raises its mmap threshold after the
/// first such free and keeps later ones in its heap: a hub that verified one password would
/// stay 19 MiB larger for good.
fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tuning parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

pub(crate) fn run(args: ServeArgs) -> ExitCode {
    return_large_allocations();
    super::init_logging(if args.quiet {
        tracing::Level::WARN
    } else if args.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    });
    let (addr, config) = match args.addr().and_then(|a| Ok((a, args.config()?))) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("gambiarra serve: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match super::runtime_with(args.threads) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let hub = match Hub::bind(addr, config).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("gambiarra serve: cannot start on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let bound = hub.local_addr();
        if !args.quiet {
            print_banner(&args, bound);
        }
        let advertised = advertise(&args, bound);
        tracing::info!(%bound, "hub started");
        let handle = hub.shutdown_handle();
        tokio::spawn(async move {
            super::wait_for_signal().await;
            tracing::info!("shutting down");
            handle.shutdown();
        });
        hub.wait().await;
        advertised.withdraw().await;
        ExitCode::SUCCESS
    })
}

fn scheme(args: &ServeArgs) -> &'static str {
    if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    }
}

/// Where the hub is, for the person who started it.
fn print_banner(args: &ServeArgs, bound: SocketAddr) {
    let scheme = scheme(args);
    // 0.0.0.0 / :: cannot be browsed to; show this machine's name for it.
    let shown = if bound.ip().is_unspecified() {
        format!("localhost:{}", bound.port())
    } else {
        bound.to_string()
    };
    println!("Gambiarra hub listening on {bound}");
    println!("  rooms:        {scheme}://{shown}/rooms");
    println!("  OpenAI base:  {scheme}://{shown}/rooms/<CODE>/v1");
    if bound.ip().is_unspecified() {
        println!("  (all interfaces: other machines use this machine's address)");
    }
}

/// The mDNS advertisement `--mdns` asked for, while the hub runs.
struct Advertised {
    #[cfg(feature = "mdns")]
    ad: Option<crate::mdns::Advertisement>,
}

impl Advertised {
    async fn withdraw(self) {
        #[cfg(feature = "mdns")]
        if let Some(ad) = self.ad {
            ad.withdraw().await;
        }
    }
}

/// Start advertising the hub with mDNS when `--mdns` asks for it (and the build can).
fn advertise(args: &ServeArgs, bound: SocketAddr) -> Advertised {
    #[cfg(feature = "mdns")]
    {
        if !args.mdns {
            return Advertised { ad: None };
        }
        match crate::mdns::Advertisement::start(bound.port(), args.tls_cert.is_some()) {
            Ok(ad) => {
                if bound.ip().is_loopback() {
                    eprintln!(
                        "gambiarra serve: advertising a hub that listens on {bound} only: \
                         other machines will see it but cannot connect (use --host 0.0.0.0)"
                    );
                }
                if !args.quiet {
                    println!("  mDNS:         {}", ad.name);
                    println!(
                        "                {}://{}:{}",
                        scheme(args),
                        crate::mdns::local_hostname(),
                        bound.port()
                    );
                }
                Advertised { ad: Some(ad) }
            }
            Err(e) => {
                eprintln!("gambiarra serve: cannot advertise with mDNS: {e}");
                Advertised { ad: None }
            }
        }
    }
    #[cfg(not(feature = "mdns"))]
    {
        let _ = bound;
        if args.mdns {
            eprintln!("gambiarra serve: this build has no mDNS (feature `mdns`); not advertising");
        }
        Advertised {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<ServeArgs, argh::EarlyExit> {
        ServeArgs::from_args(&["serve"], extra)
    }

    #[test]
    fn numeric_flags_are_range_checked_at_start() {
        for bad in [
            &["--rate-limit", "1e-300"][..],
            &["--rate-limit", "-1"],
            &["--rate-limit", "NaN"],
            &["--rate-limit", "inf"],
            &["--max-connections", "0"],
            &["--health-interval-ms", "0"],
            &["--participant-timeout-ms", "10"],
            &["--ttfb-timeout-ms", "0"],
            &["--max-rooms", "0"],
            &["--rate-burst", "0"],
            &["--threads", "0"],
            &[
                "--health-interval-ms",
                "60000",
                "--participant-timeout-ms",
                "30000",
            ],
        ] {
            let e = args(bad).unwrap().config().unwrap_err();
            assert!(e.contains(bad[0]) || e.contains("--health"), "{bad:?}: {e}");
        }
        for good in [
            &["--rate-limit", "0"][..],
            &["--rate-limit", "0.5"],
            &[],
            // A long participant timeout moves the default forgetting past it.
            &["--participant-timeout-ms", "86400000"],
        ] {
            args(good).unwrap().config().unwrap();
        }
    }
}
