//! The participant's own model server, as the agent sees it: which models it has and which
//! are loaded in memory, and which of them a participant shares.
//!
//! Servers say this differently; [`list`] finds out which kind answers ([`Flavor`]) and
//! [`list_as`] asks the same kind again on each re-probe:
//!
//! | flavor            | models                  | loaded                          |
//! |-------------------|-------------------------|---------------------------------|
//! | Ollama            | `GET /api/tags`         | `GET /api/ps`                   |
//! | LM Studio ≥ 0.4   | `GET /api/v1/models`    | `loaded_instances` not empty    |
//! | LM Studio 0.3     | `GET /api/v0/models`    | `state: "loaded"`               |
//! | OpenAI-compatible | `GET /v1/models`        | not said                        |

use std::collections::HashSet;

use serde::Deserialize;

use super::{ClientError, HubClient};
use crate::types::model::{MAX_MODELS, MAX_MODELS_JSON};
use crate::types::{ModelInfo, check_name, model_key, same_model};

/// Most models a participant sends the hub (the hub's bound; more are left out and reported).
pub const MAX_SHARED_MODELS: usize = MAX_MODELS;
/// Most models of a server's listing the agent looks at (a listing may hold any number; the
/// rest are ignored).
pub const MAX_LISTED: usize = 4096;

/// Why the local model server cannot be used.
#[derive(Debug)]
pub enum ProbeError {
    /// Nothing answered at the endpoint.
    Unreachable { endpoint: String, detail: String },
    /// The server answered, but does not serve the model.
    UnknownModel {
        model: String,
        available: Vec<String>,
    },
    /// The server answered none of the model listings.
    NoListing { endpoint: String, detail: String },
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Unreachable { endpoint, detail } => write!(
                f,
                "nothing answers at {endpoint} ({detail}).\n  Is your model server running? For Ollama: `ollama serve`; for LM Studio: start its server (default http://localhost:1234).\n  Or point to it with --endpoint URL."
            ),
            ProbeError::UnknownModel { model, available } if available.is_empty() => {
                write!(
                    f,
                    "model {model:?} is not available: the server lists no models"
                )
            }
            ProbeError::UnknownModel { model, available } => write!(
                f,
                "model {model:?} is not available. The server has:\n{}",
                available
                    .iter()
                    .map(|m| format!("  - {m}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            ProbeError::NoListing { endpoint, detail } => write!(
                f,
                "{endpoint} answered, but none of /api/tags (Ollama), /api/v1/models or /api/v0/models (LM Studio), /v1/models (OpenAI) listed models ({detail})"
            ),
        }
    }
}

impl std::error::Error for ProbeError {}

/// Which kind of server answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Ollama,
    /// LM Studio 0.4 and later (`/api/v1`).
    LmStudio,
    /// LM Studio 0.3 (`/api/v0`).
    LmStudioV0,
    OpenAi,
}

impl Flavor {
    const ALL: [Flavor; 4] = [
        Flavor::Ollama,
        Flavor::LmStudio,
        Flavor::LmStudioV0,
        Flavor::OpenAi,
    ];

    /// Whether the server tells which models are loaded.
    pub fn tells_loaded(self) -> bool {
        self != Flavor::OpenAi
    }

    /// The APIs this kind of server speaks besides OpenAI's.
    pub fn protocols(self) -> Vec<crate::types::Protocol> {
        match self {
            Flavor::Ollama => vec![crate::types::Protocol::Ollama],
            _ => Vec::new(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Flavor::Ollama => "Ollama",
            Flavor::LmStudio | Flavor::LmStudioV0 => "LM Studio",
            Flavor::OpenAi => "OpenAI-compatible",
        }
    }
}

/// What a server has.
#[derive(Clone, Debug, PartialEq)]
pub struct Listing {
    pub flavor: Flavor,
    /// In the server's order, `loaded` set where the server tells.
    pub models: Vec<ModelInfo>,
}

impl Listing {
    pub fn names(&self) -> Vec<String> {
        self.models.iter().map(|m| m.name.clone()).collect()
    }
}

#[derive(Deserialize)]
struct OllamaList {
    models: Vec<OllamaModel>,
}

/// Ollama sends both `name` and `model` (the same); older versions only `name`.
#[derive(Deserialize)]
struct OllamaModel {
    name: Option<String>,
    model: Option<String>,
}

impl OllamaModel {
    fn name(self) -> Option<String> {
        self.name.or(self.model)
    }
}

#[derive(Deserialize)]
struct LmStudioList {
    models: Vec<LmStudioModel>,
}

#[derive(Deserialize)]
struct LmStudioModel {
    key: String,
    #[serde(default)]
    loaded_instances: Vec<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct LmStudioV0List {
    data: Vec<LmStudioV0Model>,
}

#[derive(Deserialize)]
struct LmStudioV0Model {
    id: String,
    state: Option<String>,
}

#[derive(Deserialize)]
struct OpenAiList {
    data: Vec<OpenAiModel>,
}

#[derive(Deserialize)]
struct OpenAiModel {
    id: String,
}

fn unreachable(endpoint: &str, detail: String) -> ProbeError {
    ProbeError::Unreachable {
        endpoint: endpoint.into(),
        detail,
    }
}

/// Ask `endpoint` for its models the way a `flavor` server answers.
pub async fn list_as(endpoint: &str, flavor: Flavor) -> Result<Listing, ProbeError> {
    let server = HubClient::new(endpoint).map_err(|e| unreachable(endpoint, e.to_string()))?;
    let fail = |e: ClientError| match e {
        ClientError::Unreachable(detail) => unreachable(endpoint, detail),
        // This is the model server, not a hub: say it in its terms.
        ClientError::Hub { status, message } => ProbeError::NoListing {
            endpoint: endpoint.into(),
            detail: format!("it answered {status}: {}", printable(&message)),
        },
        other => ProbeError::NoListing {
            endpoint: endpoint.into(),
            detail: other.to_string(),
        },
    };
    let models = match flavor {
        Flavor::Ollama => {
            let tags: OllamaList = server.get_json("/api/tags").await.map_err(fail)?;
            // Which are in memory (by key: any spelling); an Ollama too old for /api/ps does
            // not say.
            let running: Option<HashSet<String>> = server
                .get_json::<OllamaList>("/api/ps")
                .await
                .ok()
                .map(|ps| {
                    ps.models
                        .into_iter()
                        .take(MAX_LISTED)
                        .filter_map(OllamaModel::name)
                        .map(|n| model_key(&n).into_owned())
                        .collect()
                });
            tags.models
                .into_iter()
                .take(MAX_LISTED)
                .filter_map(OllamaModel::name)
                .map(|name| {
                    let loaded = running
                        .as_ref()
                        .map(|r| r.contains(model_key(&name).as_ref()));
                    ModelInfo {
                        loaded,
                        ..ModelInfo::named(name)
                    }
                })
                .collect()
        }
        Flavor::LmStudio => server
            .get_json::<LmStudioList>("/api/v1/models")
            .await
            .map_err(fail)?
            .models
            .into_iter()
            .map(|m| ModelInfo {
                loaded: Some(!m.loaded_instances.is_empty()),
                ..ModelInfo::named(m.key)
            })
            .collect(),
        Flavor::LmStudioV0 => server
            .get_json::<LmStudioV0List>("/api/v0/models")
            .await
            .map_err(fail)?
            .data
            .into_iter()
            .map(|m| ModelInfo {
                loaded: m.state.map(|s| s == "loaded"),
                ..ModelInfo::named(m.id)
            })
            .collect(),
        Flavor::OpenAi => server
            .get_json::<OpenAiList>("/v1/models")
            .await
            .map_err(fail)?
            .data
            .into_iter()
            .map(|m| ModelInfo::named(m.id))
            .collect(),
    };
    let mut models: Vec<ModelInfo> = models;
    models.truncate(MAX_LISTED);
    Ok(Listing { flavor, models })
}

/// Find out which kind of server `endpoint` is and list its models: each [`Flavor`] in turn
/// until one answers. Nothing answering at all fails at once.
pub async fn list(endpoint: &str) -> Result<Listing, ProbeError> {
    let mut last = None;
    for flavor in Flavor::ALL {
        match list_as(endpoint, flavor).await {
            Ok(listing) => return Ok(listing),
            Err(e @ ProbeError::Unreachable { .. }) => return Err(e),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(ProbeError::NoListing {
        endpoint: endpoint.into(),
        detail: "no answer".into(),
    }))
}

/// The APIs `endpoint` speaks besides OpenAI's: what its kind of server always speaks, and
/// the Responses and Anthropic Messages APIs when it has them. Each is asked with an empty
/// request, which a server that has the route refuses as invalid (400 or 422) and one that
/// has not answers 404: nothing runs.
pub async fn protocols(endpoint: &str, flavor: Flavor) -> Vec<crate::types::Protocol> {
    use crate::types::Protocol;
    let mut spoken = flavor.protocols();
    let Ok(server) = HubClient::new(endpoint) else {
        return spoken;
    };
    for (path, protocol) in [
        ("/v1/responses", Protocol::Responses),
        ("/v1/messages", Protocol::Anthropic),
    ] {
        let answered = server
            .post_json::<serde::de::IgnoredAny, _>(path, &serde_json::json!({}))
            .await;
        if matches!(
            answered,
            Ok(_)
                | Err(ClientError::Hub {
                    status: 400 | 422,
                    ..
                })
        ) {
            spoken.push(protocol);
        }
    }
    spoken
}

/// How many requests `endpoint` runs at once, when it says: llama.cpp's server reports its
/// parallel slots as `total_slots` on `GET /props`. Others (Ollama, LM Studio, vLLM) do not
/// say: `None`, and the hub's default applies.
pub async fn slots(endpoint: &str) -> Option<u32> {
    #[derive(serde::Deserialize)]
    struct Props {
        total_slots: Option<u64>,
    }
    let server = HubClient::new(endpoint).ok()?;
    let props: Props = server.get_json("/props").await.ok()?;
    let n = props.total_slots?;
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=crate::hub::api::MAX_SLOTS).contains(n))
}

/// The names of the models `endpoint` offers.
pub async fn list_models(endpoint: &str) -> Result<Vec<String>, ProbeError> {
    list(endpoint).await.map(|l| l.names())
}

/// Check that `endpoint` serves `model`.
pub async fn probe(endpoint: &str, model: &str) -> Result<(), ProbeError> {
    let available = list_models(endpoint).await?;
    if available.iter().any(|m| same_model(m, model)) {
        Ok(())
    } else {
        Err(ProbeError::UnknownModel {
            model: model.into(),
            available,
        })
    }
}

/// What a participant shares of its server's models.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sharing {
    /// Models named to share, the primary first (`--model`). With `all`, they only choose the
    /// primary.
    pub models: Vec<String>,
    /// Everything the server lists (`--all-models`).
    pub all: bool,
    /// `(alias, model)` pairs (`--alias alias=model`).
    pub aliases: Vec<(String, String)>,
}

/// What [`Sharing::choose`] picked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Chosen {
    /// To register, the primary first; names as the user spelled them (`--model`) or as the
    /// server lists them (`--all-models`).
    pub models: Vec<ModelInfo>,
    /// Named models the server does not list (not shared until it does).
    pub missing: Vec<String>,
    /// Aliases whose model is not shared.
    pub orphan_aliases: Vec<String>,
    /// Models not sent because the hub would refuse them (a name it does not take, past its
    /// bounds), with why.
    pub left_out: Vec<(String, String)>,
}

/// `s` with control and invisible formatting characters escaped, for a terminal (names come
/// from the model server and the hub).
pub fn printable(s: &str) -> String {
    if s.chars()
        .any(|c| c.is_control() || crate::types::model::is_invisible_format(c))
    {
        s.escape_debug().to_string()
    } else {
        s.to_string()
    }
}

impl Sharing {
    /// Parse `alias=model`.
    pub fn parse_alias(s: &str) -> Result<(String, String), String> {
        match s.split_once('=') {
            Some((alias, model)) if !alias.trim().is_empty() && !model.trim().is_empty() => {
                Ok((alias.trim().to_string(), model.trim().to_string()))
            }
            _ => Err(format!("--alias {s:?}: expected ALIAS=MODEL")),
        }
    }

    /// The models to register, given what the server lists (`None`: not probed, so every
    /// named model as is, loaded unknown).
    pub fn choose(&self, listing: Option<&Listing>) -> Chosen {
        let mut chosen = Chosen::default();
        let mut models: Vec<ModelInfo> = Vec::new();
        let listed =
            |name: &str| listing.map(|l| l.models.iter().find(|m| same_model(&m.name, name)));
        for name in &self.models {
            match listed(name) {
                None => models.push(ModelInfo::named(name.as_str())),
                Some(Some(m)) if self.all => models.push(m.clone()),
                Some(Some(m)) => models.push(ModelInfo {
                    loaded: m.loaded,
                    ..ModelInfo::named(name.as_str())
                }),
                Some(None) => chosen.missing.push(name.clone()),
            }
        }
        if self.all
            && let Some(listing) = listing
        {
            // With no primary named, one already in memory answers first requests fastest.
            let named: HashSet<&str> = models.iter().map(|m| m.name.as_str()).collect();
            let mut rest: Vec<&ModelInfo> = listing
                .models
                .iter()
                .filter(|m| !named.contains(m.name.as_str()))
                .collect();
            if models.is_empty() {
                rest.sort_by_key(|m| m.loaded != Some(true));
            }
            models.extend(rest.into_iter().cloned());
        }
        for (alias, target) in &self.aliases {
            match models.iter_mut().find(|m| same_model(&m.name, target)) {
                Some(m) => m.aliases.push(alias.clone()),
                None => chosen.orphan_aliases.push(format!("{alias}={target}")),
            }
        }
        // What the hub would leave out, left out here: a name it refuses never becomes the
        // primary, and the request fits the hub's body bound.
        let mut encoded = 2;
        for mut m in models {
            m.aliases.retain(|a| check_name(a).is_ok());
            let size = serde_json::to_vec(&m).map_or(usize::MAX, |v| v.len()) + 1;
            if let Err(why) = check_name(&m.name) {
                chosen.left_out.push((m.name, why));
            } else if chosen.models.len() == MAX_SHARED_MODELS {
                chosen
                    .left_out
                    .push((m.name, format!("more than {MAX_SHARED_MODELS} models")));
            } else if encoded + size > MAX_MODELS_JSON {
                chosen.left_out.push((
                    m.name,
                    format!("the model list is over {} KiB", MAX_MODELS_JSON / 1024),
                ));
            } else {
                encoded += size;
                chosen.models.push(m);
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(models: &[(&str, Option<bool>)]) -> Listing {
        Listing {
            flavor: Flavor::Ollama,
            models: models
                .iter()
                .map(|(n, loaded)| ModelInfo {
                    loaded: *loaded,
                    ..ModelInfo::named(*n)
                })
                .collect(),
        }
    }

    #[test]
    fn named_models_keep_their_spelling() {
        let l = listing(&[("llama3:latest", Some(true)), ("phi3:latest", Some(false))]);
        let s = Sharing {
            models: vec!["phi3".into(), "llama3".into(), "mistral".into()],
            aliases: vec![("fast".into(), "phi3".into()), ("x".into(), "nope".into())],
            ..Sharing::default()
        };
        let c = s.choose(Some(&l));
        assert_eq!(
            c.models,
            [
                ModelInfo {
                    name: "phi3".into(),
                    aliases: vec!["fast".into()],
                    loaded: Some(false)
                },
                ModelInfo {
                    loaded: Some(true),
                    ..ModelInfo::named("llama3")
                },
            ]
        );
        assert_eq!(c.missing, ["mistral"]);
        assert_eq!(c.orphan_aliases, ["x=nope"]);
        // Not probed: as named.
        let c = s.choose(None);
        assert_eq!(c.models.len(), 3);
        assert!(c.models.iter().all(|m| m.loaded.is_none()));
    }

    #[test]
    fn all_models_put_a_loaded_one_first() {
        let l = listing(&[("a", Some(false)), ("b", Some(true)), ("c", None)]);
        let all = Sharing {
            all: true,
            ..Sharing::default()
        };
        let names = |c: Chosen| c.models.into_iter().map(|m| m.name).collect::<Vec<_>>();
        assert_eq!(names(all.choose(Some(&l))), ["b", "a", "c"]);
        let with_primary = Sharing {
            models: vec!["C".into()],
            ..all
        };
        assert_eq!(names(with_primary.choose(Some(&l))), ["c", "a", "b"]);
    }

    #[test]
    fn bounds() {
        let mut names: Vec<(String, Option<bool>)> =
            (0..300).map(|i| (format!("m{i}"), None)).collect();
        names.insert(0, ("x".repeat(300), None));
        names.insert(0, ("bad\u{1b}[31m".into(), Some(true)));
        let l = Listing {
            flavor: Flavor::OpenAi,
            models: names
                .iter()
                .map(|(n, _)| ModelInfo::named(n.as_str()))
                .collect(),
        };
        let c = Sharing {
            all: true,
            ..Sharing::default()
        }
        .choose(Some(&l));
        assert_eq!(c.models.len(), MAX_SHARED_MODELS);
        assert_eq!(
            c.models[0].name, "m0",
            "a name the hub refuses is never primary"
        );
        assert_eq!(c.left_out.len(), 46);
        assert_eq!(printable(&c.left_out[0].0), "bad\\u{1b}[31m");
        // Long names: the list stays within the hub's 32 KiB.
        let l = Listing {
            flavor: Flavor::OpenAi,
            models: (0..256)
                .map(|i| ModelInfo::named(format!("{i:03}{}", "n".repeat(250))))
                .collect(),
        };
        let c = Sharing {
            all: true,
            ..Sharing::default()
        }
        .choose(Some(&l));
        assert!(serde_json::to_vec(&c.models).unwrap().len() <= MAX_MODELS_JSON);
        assert_eq!(c.models.len() + c.left_out.len(), 256);
        assert!(Sharing::parse_alias("a=b").is_ok());
        assert!(Sharing::parse_alias("a=").is_err());
        assert!(Sharing::parse_alias("ab").is_err());
    }

    #[test]
    fn listings_parse() {
        let ps: OllamaList = serde_json::from_str(
            r#"{"models":[{"name":"llama3:latest","model":"llama3:latest","size":1},{"model":"b"}]}"#,
        )
        .unwrap();
        let names: Vec<_> = ps
            .models
            .into_iter()
            .filter_map(OllamaModel::name)
            .collect();
        assert_eq!(names, ["llama3:latest", "b"]);
        let lms: LmStudioList = serde_json::from_str(
            r#"{"models":[{"type":"llm","key":"qwen/qwen3-4b","loaded_instances":[{"id":"q"}]},{"key":"e","loaded_instances":[]}]}"#,
        )
        .unwrap();
        assert_eq!(lms.models[0].key, "qwen/qwen3-4b");
        assert_eq!(lms.models[0].loaded_instances.len(), 1);
        let v0: LmStudioV0List = serde_json::from_str(
            r#"{"object":"list","data":[{"id":"m","object":"model","state":"not-loaded"}]}"#,
        )
        .unwrap();
        assert_eq!(v0.data[0].state.as_deref(), Some("not-loaded"));
        // An OpenAI listing is not LM Studio's.
        assert!(serde_json::from_str::<LmStudioList>(r#"{"object":"list","data":[]}"#).is_err());
    }
}
