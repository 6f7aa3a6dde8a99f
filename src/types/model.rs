//! Models a participant serves, and how a requested name matches one.
//!
//! A participant lists every model it shares ([`ModelInfo`]: its own name for it, optional
//! aliases, and whether it is loaded in memory, when the backend tells). A request names a
//! model; the names match when they are equal, or failing that when their [`model_key`]s are:
//!
//! | rule                    | `llama3` matches        |
//! |-------------------------|-------------------------|
//! | exact                   | `llama3`                |
//! | case-insensitive        | `Llama3`, `LLAMA3`      |
//! | Ollama's implicit tag   | `llama3:latest`         |
//! | an alias the participant gave (`--alias llama3=meta-llama-3-8b-instruct`) | `meta-llama-3-8b-instruct` |
//!
//! `llama3:8b` is another model: only `:latest` is implicit.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Most models one participant may list; the hub leaves the rest out (and says so).
pub const MAX_MODELS: usize = 256;
/// Longest model name or alias, in characters.
pub const MAX_MODEL_NAME: usize = 256;
/// Most aliases one model may have.
pub const MAX_ALIASES: usize = 16;
/// Largest model list, encoded as JSON: every listing and event carries it.
pub const MAX_MODELS_JSON: usize = 32 * 1024;

/// Why `name` cannot be a model name or alias, if it cannot: empty, longer than
/// [`MAX_MODEL_NAME`], or holding control characters or invisible formatting ones (bidi
/// overrides, zero-width characters) that would make it print as another name.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("empty name".into());
    }
    if name.chars().count() > MAX_MODEL_NAME {
        return Err(format!("longer than {MAX_MODEL_NAME} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    if name.chars().any(is_invisible_format) {
        return Err("contains invisible formatting characters".into());
    }
    Ok(())
}

/// Zero-width and bidirectional formatting characters: text holding them can print as
/// something else than it is.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// An API a participant's server speaks. Every participant speaks OpenAI's (the seed's
/// contract); a request in another protocol goes preferably to one that speaks it, and is
/// translated for the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// OpenAI's chat completions, completions and embeddings (`/v1/...`).
    #[serde(rename = "openai")]
    OpenAi,
    /// Ollama's own API (`/api/chat`, `/api/generate`, `/api/embed`).
    Ollama,
    /// Anthropic's Messages API (`/v1/messages`).
    Anthropic,
    /// OpenAI's Responses API (`/v1/responses`).
    Responses,
    /// A protocol this version does not know (a newer participant's).
    #[serde(other)]
    Other,
}

impl Protocol {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::OpenAi => "openai",
            Protocol::Ollama => "ollama",
            Protocol::Anthropic => "anthropic",
            Protocol::Responses => "responses",
            Protocol::Other => "other",
        }
    }
}

/// One model a participant serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The participant's own name for it: what its server is asked for.
    pub name: String,
    /// Other names it answers to in this room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// In memory now (`None`: the backend does not say). Ollama and LM Studio load models on
    /// demand, which takes seconds to a minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<bool>,
}

impl ModelInfo {
    /// A model known only by name.
    pub fn named(name: impl Into<String>) -> ModelInfo {
        ModelInfo {
            name: name.into(),
            aliases: Vec::new(),
            loaded: None,
        }
    }

    /// Its name, then its aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.name.as_str()).chain(self.aliases.iter().map(String::as_str))
    }
}

/// The form two names are compared in when they are not equal: lower case, without Ollama's
/// implicit `:latest` tag. Borrows when `name` is already in that form.
pub fn model_key(name: &str) -> Cow<'_, str> {
    let lowered = if name.chars().any(char::is_uppercase) {
        Cow::Owned(name.to_lowercase())
    } else {
        Cow::Borrowed(name)
    };
    match lowered {
        Cow::Borrowed(s) => Cow::Borrowed(s.strip_suffix(":latest").unwrap_or(s)),
        Cow::Owned(s) => match s.strip_suffix(":latest") {
            Some(stripped) => Cow::Owned(stripped.to_string()),
            None => Cow::Owned(s),
        },
    }
}

/// Whether `a` and `b` name the same model: equal, or equal [`model_key`]s.
pub fn same_model(a: &str, b: &str) -> bool {
    a == b || model_key(a) == model_key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(model_key("llama3"), "llama3");
        assert!(matches!(model_key("llama3"), Cow::Borrowed(_)));
        assert!(matches!(model_key("llama3:latest"), Cow::Borrowed(_)));
        assert_eq!(model_key("llama3:latest"), "llama3");
        assert_eq!(model_key("Llama3:LATEST"), "llama3");
        assert_eq!(model_key("Qwen2.5-7B-Instruct"), "qwen2.5-7b-instruct");
        assert_eq!(model_key("ÉCOLE"), "école");
        assert!(same_model("llama3", "llama3:latest"));
        assert!(same_model("LLAMA3", "llama3:latest"));
        assert!(!same_model("llama3:8b", "llama3"));
        assert!(!same_model("llama3:latest-x", "llama3"));
    }

    #[test]
    fn names() {
        assert!(check_name("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M").is_ok());
        assert!(check_name("qwen2.5 coder 🦙").is_ok());
        for bad in [
            "",
            "  ",
            "a\nb",
            "a\u{1b}[31m",
            "evil\u{202E}3amall",
            "a\u{200B}b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(MAX_MODEL_NAME)).is_ok());
        assert!(check_name(&"x".repeat(MAX_MODEL_NAME + 1)).is_err());
    }

    #[test]
    fn wire_form() {
        let m = ModelInfo::named("a");
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"name":"a"}"#);
        let m = ModelInfo {
            aliases: vec!["b".into()],
            loaded: Some(true),
            ..m
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"name":"a","aliases":["b"],"loaded":true}"#
        );
        assert_eq!(m.names().collect::<Vec<_>>(), ["a", "b"]);
    }
}
