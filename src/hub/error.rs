//! The hub's one error type: a status code and a message, rendered as `{"error": "..."}` on the
//! control routes and in OpenAI's `{"error": {"message", "type", "code"}}` shape on `/v1`
//! routes, so SDKs surface the message. The message texts that existing clients match on live
//! in [`msg`].

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::json;

use crate::http::Response;

/// Message texts fixed by the TypeScript version's clients.
pub mod msg {
    pub const ROOM_NOT_FOUND: &str = "Room not found";
    pub const PARTICIPANT_NOT_FOUND: &str = "Participant not found";
    pub const NAME_REQUIRED: &str = "Name is required";
    pub const MISSING_JOIN_FIELDS: &str = "Missing required fields: id, nickname, model, endpoint";
    pub const PARTICIPANT_ID_REQUIRED: &str = "Participant ID is required";
    pub const NOT_FOUND: &str = "Not found";
    pub const METHOD_NOT_ALLOWED: &str = "Method not allowed";
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: Cow<'static, str>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(404, message)
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(503, message)
    }

    /// `{"error": message}`.
    pub fn into_response(self) -> Response {
        Response::json_error(self.status, &self.message)
    }

    /// OpenAI's error shape.
    pub fn into_openai_response(self) -> Response {
        let kind = match self.status {
            400 | 413 | 422 => "invalid_request_error",
            401 | 403 => "authentication_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            _ => "server_error",
        };
        let code = slug(&self.message);
        let body = json!({ "error": { "message": self.message, "type": kind, "code": code } });
        Response::json(
            self.status,
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        )
    }
}

/// "Room not found" → "room_not_found".
fn slug(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') && !out.is_empty() {
            out.push('_');
        }
        if out.len() >= 48 {
            break;
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Body;

    #[test]
    fn openai_shape() {
        let r = ApiError::not_found(msg::ROOM_NOT_FOUND).into_openai_response();
        assert_eq!(r.status, 404);
        let Body::Full(b) = r.body else { panic!() };
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["message"], "Room not found");
        assert_eq!(v["error"]["type"], "not_found_error");
        assert_eq!(v["error"]["code"], "room_not_found");
    }
}
