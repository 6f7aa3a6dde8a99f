//! The models a participant serves, as the hub routes by them, and the room's catalogue.
//!
//! [`ModelSet::build`] takes what a participant registered (its primary model and its list),
//! keeps what fits the bounds, reports the rest ([`Dropped`]), encodes each model's name once
//! for the body rewrite, and indexes every name and alias twice: as spelled, and by
//! [`model_key`] (case-insensitive, Ollama's implicit `:latest`). [`ModelSet::resolve`] is
//! then two hash lookups per participant on the request path. [`catalogue`] groups a room's
//! models by key for `/v1/models` and `GET /rooms/:code/models`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::hub::proxy::rewrite::Defaults;
use crate::types::{GenerationConfig, ModelInfo, ParticipantInfo, ParticipantStatus, model_key};

pub(crate) use crate::types::model::{
    MAX_ALIASES, MAX_MODEL_NAME, MAX_MODELS, MAX_MODELS_JSON, check_name,
};

/// A model left out of a participant's registration, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct Dropped {
    /// The name (an alias is written `alias=name`), cut to [`MAX_MODEL_NAME`] characters.
    pub(crate) name: String,
    pub(crate) reason: String,
}

impl Dropped {
    fn new(name: &str, reason: impl Into<String>) -> Dropped {
        let name = match name.char_indices().nth(MAX_MODEL_NAME) {
            Some((cut, _)) => format!("{}…", &name[..cut]),
            None => name.to_string(),
        };
        Dropped {
            name,
            reason: reason.into(),
        }
    }
}

/// One model as the proxy uses it.
#[derive(Debug)]
pub(crate) struct Served {
    /// The participant's own name for it: what the upstream is asked for, and what events say.
    pub(crate) name: Arc<str>,
    /// The name and the participant's config defaults, encoded once for the body rewrite.
    pub(crate) defaults: Arc<Defaults>,
}

/// The models of one participant, indexed by name.
#[derive(Debug)]
pub(crate) struct ModelSet {
    /// In the order listed, the primary one first; the same order as the participant's
    /// `info.models`.
    pub(crate) models: Vec<Served>,
    /// Every name and alias, as spelled → (index in `models`, whether it is the model's own
    /// name) (names before aliases, the first listed winning).
    exact: HashMap<Box<str>, (u16, bool)>,
    /// The same by [`model_key`].
    keyed: HashMap<Box<str>, u16>,
}

/// Most left-out models an answer names one by one; the rest are counted in a last entry.
pub(crate) const MAX_DROPPED_LISTED: usize = 32;

/// The left-out models of one registration, named up to [`MAX_DROPPED_LISTED`].
#[derive(Default)]
struct Report {
    listed: Vec<Dropped>,
    more: usize,
}

impl Report {
    fn drop(&mut self, name: impl FnOnce() -> String, why: impl FnOnce() -> String) {
        if self.listed.len() < MAX_DROPPED_LISTED {
            self.listed.push(Dropped::new(&name(), why()));
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<Dropped> {
        if self.more > 0 {
            self.listed.push(Dropped {
                name: "…".into(),
                reason: format!("and {} more left out", self.more),
            });
        }
        self.listed
    }
}

/// A participant's models as [`ModelSet::build`] left them: the set, the list as it will be
/// listed, and what was left out.
pub(crate) type Built = (ModelSet, Vec<ModelInfo>, Vec<Dropped>);

impl ModelSet {
    /// Build a participant's set from its `primary` model (validated by the caller) and its
    /// `list`, within the bounds: entries with a bad or repeated name, names and aliases
    /// that are another participant's id (`is_other_id`, by [`model_key`]: ids and model
    /// names share one namespace per room, first come first served, so neither can capture
    /// the other's requests), aliases past [`MAX_ALIASES`] or naming another model, models
    /// past [`MAX_MODELS`] or [`MAX_MODELS_JSON`] are left out and reported. `primary` comes
    /// first (added if the list lacks it); without one, the first kept entry is primary.
    /// `Err` when nothing is left.
    pub(crate) fn build(
        primary: Option<&str>,
        list: Vec<ModelInfo>,
        config: &GenerationConfig,
        is_other_id: &dyn Fn(&str) -> bool,
    ) -> Result<Built, String> {
        let mut list = list;
        if let Some(primary) = primary {
            match list.iter().position(|m| m.name == primary) {
                Some(i) => {
                    let m = list.remove(i);
                    list.insert(0, m);
                }
                None => list.insert(0, ModelInfo::named(primary)),
            }
        }
        const OTHER_ID: &str = "the id of another participant in this room";
        let mut report = Report::default();
        // Names first: an alias may not take another model's name, wherever it is listed.
        let mut names = std::collections::HashSet::new();
        let mut candidates = Vec::new();
        for m in list {
            if let Err(why) = check_name(&m.name) {
                report.drop(|| m.name.clone(), || why);
            } else if names.contains(m.name.as_str()) {
                report.drop(|| m.name.clone(), || "listed twice".into());
            } else if names.len() == MAX_MODELS {
                report.drop(
                    || m.name.clone(),
                    || format!("more than {MAX_MODELS} models"),
                );
            } else if is_other_id(&model_key(&m.name)) {
                report.drop(|| m.name.clone(), || OTHER_ID.into());
            } else {
                names.insert(m.name.clone());
                candidates.push(m);
            }
        }
        let mut kept: Vec<ModelInfo> = Vec::new();
        let mut taken = std::collections::HashSet::new();
        // `[` and `]`, then each entry and its comma.
        let mut encoded = 2;
        for mut m in candidates {
            let mut aliases = Vec::new();
            for alias in std::mem::take(&mut m.aliases) {
                let why = if let Err(why) = check_name(&alias) {
                    why
                } else if alias == m.name || aliases.contains(&alias) {
                    continue;
                } else if aliases.len() == MAX_ALIASES {
                    format!("more than {MAX_ALIASES} aliases")
                } else if names.contains(&alias) {
                    "already the name of another model".into()
                } else if taken.contains(&alias) {
                    "already an alias of another model".into()
                } else if is_other_id(&model_key(&alias)) {
                    OTHER_ID.into()
                } else {
                    aliases.push(alias);
                    continue;
                };
                report.drop(|| format!("{alias}={}", m.name), || why);
            }
            m.aliases = aliases;
            // Serialising a struct of strings cannot fail.
            let size = serde_json::to_vec(&m).map_or(usize::MAX, |v| v.len()) + 1;
            if encoded + size > MAX_MODELS_JSON {
                report.drop(
                    || m.name.clone(),
                    || format!("the model list is over {} KiB", MAX_MODELS_JSON / 1024),
                );
                continue;
            }
            encoded += size;
            taken.extend(m.aliases.iter().cloned());
            kept.push(m);
        }
        let dropped = report.finish();
        if kept.is_empty() {
            let why = dropped
                .first()
                .map_or(String::new(), |d| format!(" ({:?}: {})", d.name, d.reason));
            return Err(format!("no usable model: each was left out{why}"));
        }
        let mut set = ModelSet {
            models: Vec::with_capacity(kept.len()),
            exact: HashMap::new(),
            keyed: HashMap::new(),
        };
        for m in &kept {
            set.models.push(Served {
                name: m.name.as_str().into(),
                defaults: Arc::new(Defaults::new(&m.name, config)),
            });
        }
        // Indexed exact names first, then aliases, then keys: a key never shadows a spelling,
        // and the first model listed wins a key two share. At most MAX_MODELS (256) entries:
        // an index fits a u16.
        for (i, m) in kept.iter().enumerate() {
            set.exact.insert(m.name.as_str().into(), (i as u16, true));
        }
        for (i, m) in kept.iter().enumerate() {
            for alias in &m.aliases {
                set.exact
                    .entry(alias.as_str().into())
                    .or_insert((i as u16, false));
            }
        }
        for (i, m) in kept.iter().enumerate() {
            set.keyed
                .entry(model_key(&m.name).into_owned().into_boxed_str())
                .or_insert(i as u16);
        }
        for (i, m) in kept.iter().enumerate() {
            for alias in &m.aliases {
                set.keyed
                    .entry(model_key(alias).into_owned().into_boxed_str())
                    .or_insert(i as u16);
            }
        }
        Ok((set, kept, dropped))
    }

    /// The model `requested` names (`key` is `model_key(requested)`, computed once per
    /// request), with whether it is that model's own name spelled exactly so (not an alias,
    /// not a normalised spelling).
    pub(crate) fn resolve(&self, requested: &str, key: &str) -> Option<(usize, bool)> {
        if let Some(&(i, own_name)) = self.exact.get(requested) {
            return Some((usize::from(i), own_name));
        }
        self.keyed.get(key).map(|&i| (usize::from(i), false))
    }
}

/// One participant offering a catalogue model.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Offer {
    pub(crate) participant_id: String,
    pub(crate) status: ParticipantStatus,
    /// The participant's name for the model (what its server is asked for).
    pub(crate) model: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) loaded: Option<bool>,
}

/// One model of a room's catalogue: every name that reaches it, and who serves it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CatalogueModel {
    /// A name users can send: the first spelling the room saw.
    pub(crate) id: String,
    /// Spellings (names and aliases) in the room that reach the same participants, the first
    /// [`MAX_CATALOGUE_NAMES`].
    pub(crate) names: Vec<String>,
    /// Participants serving it that are not offline (busy ones included).
    pub(crate) online: usize,
    pub(crate) busy: usize,
    /// Online participants that have it in memory.
    pub(crate) loaded: usize,
    /// Unix seconds: the earliest join of a participant serving it.
    pub(crate) created: u64,
    /// In join order, offline ones included.
    pub(crate) participants: Vec<Offer>,
}

/// Most spellings a catalogue entry lists.
pub(crate) const MAX_CATALOGUE_NAMES: usize = 16;

/// A room's models grouped by [`model_key`] of every name and alias, in the order first seen
/// (participants in join order). A participant counts once per group. Linear in the names
/// the room's participants list (each bounded by [`MAX_MODELS_JSON`]).
pub(crate) fn catalogue(participants: &[ParticipantInfo]) -> Vec<CatalogueModel> {
    let mut groups: Vec<CatalogueModel> = Vec::new();
    // Key → (group, the last participant counted in it).
    let mut index: HashMap<String, (usize, usize)> = HashMap::new();
    for (n, p) in participants.iter().enumerate() {
        let fallback;
        let models = if p.models.is_empty() {
            fallback = [ModelInfo::named(p.model.as_str())];
            &fallback[..]
        } else {
            &p.models[..]
        };
        for m in models {
            for name in m.names() {
                let key = model_key(name).into_owned();
                let (g, last) = index.entry(key).or_insert_with(|| {
                    groups.push(CatalogueModel {
                        id: name.to_string(),
                        names: Vec::new(),
                        online: 0,
                        busy: 0,
                        loaded: 0,
                        created: p.joined_at / 1000,
                        participants: Vec::new(),
                    });
                    (groups.len() - 1, usize::MAX)
                });
                let group = &mut groups[*g];
                if group.names.len() < MAX_CATALOGUE_NAMES && !group.names.iter().any(|n| n == name)
                {
                    group.names.push(name.to_string());
                }
                // A participant's names are seen together: once counted, the rest are its own.
                if std::mem::replace(last, n) == n {
                    continue;
                }
                group.created = group.created.min(p.joined_at / 1000);
                if p.status != ParticipantStatus::Offline {
                    group.online += 1;
                    group.busy += usize::from(p.status == ParticipantStatus::Busy);
                    group.loaded += usize::from(m.loaded == Some(true));
                }
                group.participants.push(Offer {
                    participant_id: p.id.clone(),
                    status: p.status,
                    model: m.name.clone(),
                    loaded: m.loaded,
                });
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, aliases: &[&str], loaded: Option<bool>) -> ModelInfo {
        ModelInfo {
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            loaded,
        }
    }

    fn build(
        primary: Option<&str>,
        list: Vec<ModelInfo>,
    ) -> (ModelSet, Vec<ModelInfo>, Vec<Dropped>) {
        ModelSet::build(primary, list, &GenerationConfig::default(), &|_| false).unwrap()
    }

    #[test]
    fn primary_first_and_matching() {
        let (set, kept, dropped) = build(
            Some("qwen2.5:7b"),
            vec![
                info("llama3:latest", &[], Some(true)),
                info("meta-llama-3-8b-instruct", &["Llama-3"], None),
                info("qwen2.5:7b", &[], Some(false)),
            ],
        );
        assert!(dropped.is_empty());
        assert_eq!(kept[0].name, "qwen2.5:7b");
        assert_eq!(kept[0].loaded, Some(false));
        assert_eq!(&*set.models[0].name, "qwen2.5:7b");
        let r = |s: &str| {
            set.resolve(s, &model_key(s))
                .map(|(i, e)| (&*set.models[i].name, e))
        };
        assert_eq!(r("llama3:latest"), Some(("llama3:latest", true)));
        assert_eq!(r("llama3"), Some(("llama3:latest", false)));
        assert_eq!(r("LLAMA3"), Some(("llama3:latest", false)));
        assert_eq!(r("Llama-3"), Some(("meta-llama-3-8b-instruct", false)));
        assert_eq!(r("llama-3"), Some(("meta-llama-3-8b-instruct", false)));
        assert_eq!(r("qwen2.5"), None);
        assert_eq!(r("llama3:8b"), None);
        // A primary not in the list is added in front.
        let (_, kept, _) = build(Some("x"), vec![info("y", &[], None)]);
        assert_eq!(
            kept.iter().map(|m| &*m.name).collect::<Vec<_>>(),
            ["x", "y"]
        );
    }

    #[test]
    fn exact_spelling_wins_over_a_key() {
        // Two models whose keys collide: each spelling reaches its own.
        let (set, _, _) = build(
            None,
            vec![info("Llama3", &[], None), info("llama3", &[], None)],
        );
        assert_eq!(set.resolve("llama3", "llama3"), Some((1, true)));
        assert_eq!(set.resolve("Llama3", "llama3"), Some((0, true)));
        assert_eq!(set.resolve("LLAMA3", "llama3"), Some((0, false)));
    }

    #[test]
    fn bounds_drop_and_report() {
        let mut list: Vec<ModelInfo> = (0..MAX_MODELS + 3)
            .map(|i| info(&format!("m{i}"), &[], None))
            .collect();
        list.push(info(&"x".repeat(MAX_MODEL_NAME + 1), &[], None));
        list.push(info("bad\nname", &[], None));
        list.push(info("m1", &[], None));
        let many: Vec<String> = (0..MAX_ALIASES + 2).map(|i| format!("a{i}")).collect();
        list[1].aliases = many;
        list[2].aliases = vec!["m0".into()];
        let (set, kept, dropped) = build(None, list);
        assert_eq!(kept.len(), MAX_MODELS);
        assert_eq!(set.models.len(), MAX_MODELS);
        assert_eq!(kept[1].aliases.len(), MAX_ALIASES);
        let reasons: Vec<(&str, &str)> = dropped
            .iter()
            .map(|d| (d.name.as_str(), d.reason.as_str()))
            .collect();
        assert!(
            reasons.contains(&("a16=m1", "more than 16 aliases")),
            "{reasons:?}"
        );
        assert!(reasons.contains(&("m0=m2", "already the name of another model")));
        assert!(reasons.contains(&("m256", "more than 256 models")));
        assert!(reasons.contains(&("m258", "more than 256 models")));
        assert!(reasons.contains(&("bad\nname", "contains control characters")));
        assert!(reasons.contains(&("m1", "listed twice")));
        let long = dropped
            .iter()
            .find(|d| d.reason.starts_with("longer"))
            .unwrap();
        assert_eq!(
            long.name.chars().count(),
            MAX_MODEL_NAME + 1,
            "cut, with an ellipsis"
        );
        assert!(
            ModelSet::build(
                None,
                vec![info("", &[], None)],
                &GenerationConfig::default(),
                &|_| false
            )
            .is_err()
        );
    }

    #[test]
    fn names_and_ids_share_one_namespace() {
        let (_, kept, dropped) = ModelSet::build(
            None,
            vec![
                info("alice", &[], None),
                info("phi3", &["Bob", "small"], None),
            ],
            &GenerationConfig::default(),
            &|k| k == "alice" || k == "bob",
        )
        .unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].aliases, ["small"]);
        let reasons: Vec<_> = dropped
            .iter()
            .map(|d| (d.name.as_str(), d.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            [
                ("alice", "the id of another participant in this room"),
                ("Bob=phi3", "the id of another participant in this room")
            ]
        );
    }

    #[test]
    fn aliases_and_spellings_rank_below_the_own_name() {
        let (set, _, _) = build(None, vec![info("llama3:latest", &["l3"], None)]);
        assert_eq!(set.resolve("llama3:latest", "llama3"), Some((0, true)));
        assert_eq!(set.resolve("l3", "l3"), Some((0, false)));
        assert_eq!(set.resolve("llama3", "llama3"), Some((0, false)));
    }

    #[test]
    fn the_report_is_bounded() {
        let list: Vec<ModelInfo> = (0..100).map(|_| info("", &[], None)).collect();
        let err = ModelSet::build(None, list, &GenerationConfig::default(), &|_| false);
        assert!(err.unwrap_err().contains("empty name"));
        let mut list = vec![info("m", &[], None)];
        list[0].aliases = (0..5000).map(|i| format!("a{i}")).collect();
        let (_, kept, dropped) = build(None, list);
        assert_eq!(kept[0].aliases.len(), MAX_ALIASES);
        assert_eq!(dropped.len(), MAX_DROPPED_LISTED + 1);
        assert_eq!(
            dropped.last().unwrap().reason,
            format!(
                "and {} more left out",
                5000 - MAX_ALIASES - MAX_DROPPED_LISTED
            )
        );
    }

    #[test]
    fn the_list_is_bounded_in_bytes() {
        let list: Vec<ModelInfo> = (0..200)
            .map(|i| info(&format!("{i:03}{}", "n".repeat(250)), &[], None))
            .collect();
        let (_, kept, dropped) = build(None, list);
        let size = serde_json::to_vec(&kept).unwrap().len();
        assert!(size <= MAX_MODELS_JSON, "{size}");
        // 200 - 123 kept = 77 left out: 32 named, the rest counted.
        assert_eq!(kept.len(), 123);
        assert_eq!(dropped.len(), MAX_DROPPED_LISTED + 1);
        assert!(dropped[0].reason.contains("KiB"));
        assert_eq!(dropped[MAX_DROPPED_LISTED].reason, "and 45 more left out");
    }

    #[test]
    fn catalogue_entries_list_few_spellings() {
        // Every case variant of one name, from many participants: one entry, each participant
        // once, 16 spellings.
        let variants: Vec<ModelInfo> = (0..1024u32)
            .map(|bits| {
                let name: String = "abcdefghij"
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if bits >> i & 1 == 1 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect();
                info(&name, &[], None)
            })
            .collect();
        let room: Vec<ParticipantInfo> = (0..20)
            .map(|i| ParticipantInfo {
                id: format!("p{i}"),
                nickname: "n".into(),
                model: "abcdefghij".into(),
                models: variants.clone(),
                protocols: Vec::new(),
                slots: None,
                endpoint: "http://x".into(),
                config: Default::default(),
                specs: Default::default(),
                status: ParticipantStatus::Online,
                in_flight: 0,
                joined_at: 0,
                last_seen: 0,
            })
            .collect();
        let cat = catalogue(&room);
        assert_eq!(cat.len(), 1);
        assert_eq!(cat[0].names.len(), MAX_CATALOGUE_NAMES);
        assert_eq!((cat[0].participants.len(), cat[0].online), (20, 20));
    }

    #[test]
    fn catalogue_groups_by_key() {
        let p = |id: &str, status, models: Vec<ModelInfo>| ParticipantInfo {
            id: id.into(),
            nickname: format!("n-{id}"),
            model: models[0].name.clone(),
            models,
            protocols: Vec::new(),
            slots: None,
            endpoint: "http://x".into(),
            config: Default::default(),
            specs: Default::default(),
            status,
            in_flight: 0,
            joined_at: 5_000,
            last_seen: 0,
        };
        let room = [
            p(
                "a",
                ParticipantStatus::Busy,
                vec![info("llama3:latest", &[], Some(true))],
            ),
            p(
                "b",
                ParticipantStatus::Online,
                vec![
                    info("meta-llama-3-8b-instruct", &["llama3"], None),
                    info("phi3", &[], None),
                ],
            ),
            p(
                "c",
                ParticipantStatus::Offline,
                vec![info("Llama3", &[], Some(true))],
            ),
        ];
        let cat = catalogue(&room);
        let ids: Vec<&str> = cat.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["llama3:latest", "meta-llama-3-8b-instruct", "phi3"]);
        let llama = &cat[0];
        assert_eq!(llama.names, ["llama3:latest", "llama3", "Llama3"]);
        assert_eq!((llama.online, llama.busy, llama.loaded), (2, 1, 1));
        assert_eq!(llama.participants.len(), 3);
        assert_eq!(llama.participants[1].model, "meta-llama-3-8b-instruct");
        assert_eq!(llama.created, 5);
        assert_eq!((cat[2].online, cat[2].busy), (1, 0));
    }
}
