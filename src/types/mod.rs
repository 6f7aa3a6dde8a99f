//! The seed's types (`../shared/seeds/participant-types.txt`, `sse-events.txt`), serde-ready and
//! camelCase on the wire, plus the health constants; [`event`] holds the event stream's
//! payloads.
//!
//! Numbers that users supply (generation config, machine specs) are kept as
//! `serde_json::Number`, so `2048` goes back out as `2048` and `0.7` as `0.7`: the hub lists
//! exactly what a participant registered.

pub mod event;
pub mod model;

pub use model::{ModelInfo, Protocol, check_name, model_key, same_model};

use serde::{Deserialize, Serialize};
use serde_json::Number;

/// Milliseconds between a participant's health checks.
pub const HEALTH_CHECK_INTERVAL_MS: u64 = 10_000;
/// Milliseconds without a health check after which a participant is offline (3 missed checks).
pub const PARTICIPANT_TIMEOUT_MS: u64 = HEALTH_CHECK_INTERVAL_MS * 3;

/// Availability of a participant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantStatus {
    Online,
    Busy,
    Offline,
}

/// Hardware of a participant's machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineSpecs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// Video RAM in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vram: Option<Number>,
    /// System RAM in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
}

/// Generation defaults of a participant (OpenAI parameter names, hence snake_case).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// 0 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<Number>,
    /// 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<Number>,
    /// -2 to 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<Number>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Number>,
}

impl GenerationConfig {
    /// Check every value against the seed's ranges. `Err` names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        fn range(name: &str, v: &Option<Number>, lo: f64, hi: f64) -> Result<(), String> {
            match v.as_ref().and_then(Number::as_f64) {
                Some(x) if !(lo..=hi).contains(&x) => {
                    Err(format!("config.{name} must be between {lo} and {hi}"))
                }
                _ => Ok(()),
            }
        }
        range("temperature", &self.temperature, 0.0, 2.0)?;
        range("top_p", &self.top_p, 0.0, 1.0)?;
        range("frequency_penalty", &self.frequency_penalty, -2.0, 2.0)?;
        range("presence_penalty", &self.presence_penalty, -2.0, 2.0)?;
        if let Some(m) = &self.max_tokens
            && m.as_u64().is_none_or(|m| m == 0)
        {
            return Err("config.max_tokens must be a positive integer".into());
        }
        if let Some(s) = &self.seed
            && !(s.is_i64() || s.is_u64())
        {
            return Err("config.seed must be an integer".into());
        }
        Ok(())
    }
}

/// A participant as listed and broadcast.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    pub id: String,
    pub nickname: String,
    /// The primary model: what a request for this participant's id (or `*`) is served with.
    /// The first of `models`.
    pub model: String,
    /// Every model it serves, the primary one first (a participant of a hub older than this
    /// list, or of the seed, sends none: read it as `[model]`).
    #[serde(default)]
    pub models: Vec<ModelInfo>,
    /// The APIs its server speaks besides OpenAI's, which every participant speaks (empty:
    /// OpenAI's only, as the seed's participants).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<Protocol>,
    /// Requests it runs at once (its server's parallel slots): the hub never sends it more,
    /// and queues the rest. Absent: the hub's default (`serve --default-slots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// The endpoint exactly as registered.
    pub endpoint: String,
    #[serde(default)]
    pub config: GenerationConfig,
    #[serde(default)]
    pub specs: MachineSpecs,
    pub status: ParticipantStatus,
    /// Requests it is running now, as the hub counts them (absent: none). A participant's own
    /// join or update never sets it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub in_flight: u32,
    /// Unix milliseconds.
    pub joined_at: u64,
    /// Unix milliseconds of the last health check.
    pub last_seen: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A room as created and broadcast in `room:created`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo {
    pub id: String,
    pub code: String,
    pub name: String,
    pub host_id: String,
    /// Unix milliseconds.
    pub created_at: u64,
    /// Joining and using the room needs its password (the password itself is never sent).
    #[serde(default)]
    pub password_protected: bool,
    /// How its requests pick a participant, when its creator chose (absent: the hub's
    /// default, `serve --routing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
}

/// How a room picks among the participants that can take a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// The participant with the fewest requests in flight (ties: loaded model, rotation).
    LeastLoaded,
    /// The participant most likely to hold the request's prompt prefix in its KV cache (the
    /// one that last served the longest head of it), unless its load is too far above the
    /// least loaded one's; otherwise as `least-loaded`.
    CacheAware,
}

impl Routing {
    pub fn name(self) -> &'static str {
        match self {
            Routing::LeastLoaded => "least-loaded",
            Routing::CacheAware => "cache-aware",
        }
    }
}

impl std::str::FromStr for Routing {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "least-loaded" => Ok(Routing::LeastLoaded),
            "cache-aware" => Ok(Routing::CacheAware),
            _ => Err(format!(
                "unknown routing {s:?} (least-loaded or cache-aware)"
            )),
        }
    }
}

/// A room in `GET /rooms`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomSummary {
    pub id: String,
    pub code: String,
    pub name: String,
    pub host_id: String,
    pub created_at: u64,
    pub participant_count: usize,
    #[serde(default)]
    pub password_protected: bool,
}

/// Performance of one generation, as sent in `llm:complete`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmMetrics {
    pub tokens: u64,
    pub latency_first_token_ms: u64,
    pub duration_ms: u64,
    pub tokens_per_second: f64,
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_ranges() {
        let ok: GenerationConfig =
            serde_json::from_str(r#"{"temperature":0.7,"max_tokens":2048,"seed":-3}"#).unwrap();
        assert!(ok.validate().is_ok());
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"temperature":0.7,"max_tokens":2048,"seed":-3}"#
        );
        for bad in [
            r#"{"temperature":2.5}"#,
            r#"{"top_p":-0.1}"#,
            r#"{"frequency_penalty":3}"#,
            r#"{"presence_penalty":-2.01}"#,
            r#"{"max_tokens":0}"#,
            r#"{"max_tokens":1.5}"#,
            r#"{"seed":0.5}"#,
        ] {
            let c: GenerationConfig = serde_json::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn participant_is_camel_case() {
        let p = ParticipantInfo {
            id: "a".into(),
            nickname: "n".into(),
            model: "m".into(),
            models: vec![ModelInfo::named("m")],
            slots: None,
            protocols: Vec::new(),
            endpoint: "http://x".into(),
            config: GenerationConfig::default(),
            specs: MachineSpecs::default(),
            status: ParticipantStatus::Busy,
            in_flight: 0,
            joined_at: 1,
            last_seen: 2,
        };
        let s = serde_json::to_string(&p).unwrap();
        assert!(s.contains(r#""joinedAt":1,"lastSeen":2"#), "{s}");
        assert!(s.contains(r#""status":"busy""#));
    }
}
