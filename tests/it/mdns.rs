//! mDNS end to end: `serve --mdns` advertises, `discover` and a command without `--hub` find
//! it, and shutting down withdraws it (a goodbye with TTL 0). Runs in a network namespace the
//! test creates (only loopback, multicast on), so it neither depends on nor disturbs the
//! machine's network. Ignored by default (it needs root and iproute2); `cargo test -- --ignored`
//! runs it, and fails where namespaces cannot be made.
#![cfg(all(feature = "mdns", feature = "client"))]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gambiarra::internals::packet::{self, RData};

const BIN: &str = env!("CARGO_BIN_EXE_gambiarra");

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> Option<Netns> {
        let name = format!("gambiarra-mdns-{}", std::process::id());
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !ok(&["netns", "add", &name]) {
            return None;
        }
        let ns = Netns(name);
        let setup = ok(&["-n", &ns.0, "link", "set", "lo", "up", "multicast", "on"])
            && ok(&["-n", &ns.0, "route", "add", "224.0.0.0/4", "dev", "lo"]);
        setup.then_some(ns)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c.env_remove("GAMBIARRA_HUB");
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn discover(ns: &Netns) -> Vec<serde_json::Value> {
    let out = ns
        .cmd(BIN)
        .args(["discover", "--json", "--timeout-ms", "600"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", out);
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs root and iproute2 (network namespaces); CI runs it: cargo test -- --ignored"]
fn advertise_discover_and_withdraw() {
    let ns = Netns::create().expect("cannot create a network namespace (needs root and iproute2)");
    let port = 3913u16; // inside the namespace: nothing else listens there
    let mut hub = ns
        .cmd(BIN)
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--mdns",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // A listener on the mDNS group inside the namespace, to catch the goodbye.
    let mut sniffer = ns
        .cmd("python3")
        .args([
            "-c",
            r#"
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("", 5353))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton("224.0.0.251"), socket.inet_aton("0.0.0.0")))
s.settimeout(0.5)
print("ready", flush=True)
end = time.time() + 20
while time.time() < end:
    try:
        data, _ = s.recvfrom(9000)
        print(data.hex(), flush=True)
    except socket.timeout:
        pass
"#,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sniffed = std::io::BufReader::new(sniffer.stdout.take().unwrap());
    let mut line = String::new();
    use std::io::BufRead;
    sniffed.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");

    // The startup output names the service and the .local URL.
    let mut out = std::io::BufReader::new(hub.stdout.take().unwrap());
    let mut printed = String::new();
    while !printed.contains(".local:") {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap() == 0 {
            panic!("serve ended early: {printed}");
        }
        printed.push_str(&l);
    }
    assert!(printed.contains(&format!("gambiarra-hub-{port}._gambiarra._tcp.local")));

    // discover finds it, with its TXT.
    let mut hubs = Vec::new();
    let start = Instant::now();
    while hubs.is_empty() && start.elapsed() < Duration::from_secs(10) {
        hubs = discover(&ns);
    }
    assert_eq!(hubs.len(), 1, "{hubs:?}");
    assert_eq!(hubs[0]["url"], format!("http://127.0.0.1:{port}"));
    assert_eq!(hubs[0]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(hubs[0]["protocol"], "http");

    // A command without --hub or GAMBIARRA_HUB uses it.
    let out = ns.cmd(BIN).args(["list"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Using the hub found on this network"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("No rooms available."));

    // SIGTERM: the hub withdraws the service before it exits.
    Command::new("kill")
        .args(["-TERM", &hub.id().to_string()])
        .status()
        .unwrap();
    assert!(hub.wait().unwrap().success());
    let mut goodbye = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !goodbye && Instant::now() < deadline {
        line.clear();
        if sniffed.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let Some(bytes) = hex(line.trim()) else {
            continue;
        };
        let Ok(m) = packet::parse(&bytes) else {
            continue;
        };
        goodbye = m.response
            && m.records.iter().any(|r| {
                r.ttl == 0
                    && matches!(&r.data, RData::Ptr(p) if p.starts_with(&format!("gambiarra-hub-{port}.")))
            });
    }
    let _ = sniffer.kill();
    let _ = sniffer.wait();
    assert!(goodbye, "no goodbye (TTL 0) for the service after shutdown");
    assert!(discover(&ns).is_empty());
}

fn hex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}
