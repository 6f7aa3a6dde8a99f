//! The hub's one error type: a status code and a message, rendered as `{"error": "..."}` on the
//! control routes and in OpenAI's `{"error": {"message", "type", "code"}}` shape on `/v1`
//! routes, so SDKs surface the message. The message texts that existing clients match on live
//! in [`msg`].

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::json;

use crate::http::Response;

/// Message texts fixed by the TypeScript version's clients.
pub(crate) mod msg {
    pub(crate) const ROOM_NOT_FOUND: &str = "Room not found";
    pub(crate) const PARTICIPANT_NOT_FOUND: &str = "Participant not found";
    pub(crate) const NAME_REQUIRED: &str = "Name is required";
    pub(crate) const MISSING_JOIN_FIELDS: &str =
        "Missing required fields: id, nickname, model, endpoint";
    pub(crate) const PARTICIPANT_ID_REQUIRED: &str = "Participant ID is required";
    pub(crate) const NOT_FOUND: &str = "Not found";
    pub(crate) const METHOD_NOT_ALLOWED: &str = "Method not allowed";
    pub(crate) const ROOM_REMOVED: &str = "Room was removed by its host";
    pub(crate) const INVALID_PASSWORD: &str = "Invalid password";
}

impl From<crate::hub::rooms::ids::NoRandomness> for ApiError {
    fn from(e: crate::hub::rooms::ids::NoRandomness) -> Self {
        tracing::error!("{e}: refusing to make a secret or id any other way");
        ApiError::new(500, "The hub cannot make random secrets right now")
    }
}

impl From<crate::hub::rooms::StateError> for ApiError {
    /// Every refusal of the rooms' state, as the client sees it.
    fn from(e: crate::hub::rooms::StateError) -> Self {
        use crate::hub::rooms::StateError as E;
        match e {
            E::RoomNotFound => ApiError::not_found(msg::ROOM_NOT_FOUND),
            E::RoomRemoved => ApiError::new(410, msg::ROOM_REMOVED),
            E::ParticipantNotFound => ApiError::not_found(msg::PARTICIPANT_NOT_FOUND),
            E::RoomLimit => ApiError::unavailable("Room limit reached on this hub"),
            E::RoomsPerAddress => ApiError::too_many(
                "Too many rooms created from your address: delete one first",
                60,
            ),
            E::ParticipantLimit => ApiError::unavailable("Participant limit reached for this room"),
            E::RoomSubscriberLimit => {
                ApiError::unavailable("Too many event subscribers for this room")
            }
            E::HubSubscriberLimit => {
                ApiError::unavailable("Too many event subscribers on this hub")
            }
            E::ShuttingDown => ApiError::unavailable("Hub is shutting down"),
            E::Invalid(why) => ApiError::bad_request(why),
            E::NotOwner(why) => ApiError::new(403, why),
            E::SaveFailed { what, error } => {
                ApiError::new(500, format!("Could not save {what}: {error}"))
            }
            E::NoRandomness => crate::hub::rooms::ids::NoRandomness.into(),
        }
    }
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub(crate) status: u16,
    pub(crate) message: Cow<'static, str>,
    /// Seconds after which trying again may succeed (`Retry-After`), for 429 and 503.
    pub(crate) retry_after: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: u16, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 with `Retry-After`.
    pub(crate) fn too_many(message: impl Into<Cow<'static, str>>, retry_after_secs: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(429, message)
        }
    }

    /// With `Retry-After`.
    pub(crate) fn retry_after(self, secs: u64) -> Self {
        ApiError {
            retry_after: Some(secs.max(1)),
            ..self
        }
    }

    /// 401: the room's password is missing or wrong.
    pub(crate) fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(401, message)
    }

    fn finish(&self, r: Response) -> Response {
        let r = match self.retry_after {
            Some(s) => r.header("Retry-After", Bytes::from(s.to_string())),
            None => r,
        };
        if self.status == 401 {
            r.header(
                "WWW-Authenticate",
                Bytes::from_static(b"Bearer realm=\"gambiarra\""),
            )
        } else {
            r
        }
    }

    pub(crate) fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(400, message)
    }

    pub(crate) fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(404, message)
    }

    pub(crate) fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(503, message)
    }

    /// In the shape of the route it answers: OpenAI's on `/v1`, `{"error"}` elsewhere.
    pub(crate) fn render(self, v1: bool) -> Response {
        if v1 {
            self.into_openai_response()
        } else {
            self.into_response()
        }
    }

    /// In the dialect of the route it answers: OpenAI's on `/v1`, Anthropic's on the Messages
    /// API, `{"error"}` elsewhere (Ollama's shape too).
    pub(crate) fn render_for(self, route: &crate::hub::router::Route<'_>) -> Response {
        match route {
            crate::hub::router::Route::Anthropic { .. } => self.into_anthropic_response(),
            r => self.render(r.is_v1()),
        }
    }

    /// Anthropic's error shape, `{"type":"error","error":{"type","message"}}`.
    pub(crate) fn into_anthropic_response(self) -> Response {
        let body = crate::hub::translate::anthropic::error_body(self.status, &self.message);
        self.finish(Response::json(
            self.status,
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        ))
    }

    /// `{"error": message}`.
    pub(crate) fn into_response(self) -> Response {
        self.finish(Response::json_error(self.status, &self.message))
    }

    /// OpenAI's error shape.
    pub(crate) fn into_openai_response(self) -> Response {
        let kind = match self.status {
            400 | 413 | 422 => "invalid_request_error",
            401 | 403 => "authentication_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            _ => "server_error",
        };
        let code = self.code();
        let body = json!({ "error": { "message": self.message, "type": kind, "code": code } });
        self.finish(Response::json(
            self.status,
            Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        ))
    }
}

impl ApiError {
    /// The OpenAI-shaped error's `code`: one of a fixed, documented set (README, "HTTP API"),
    /// so clients can match on it whatever the message says.
    pub(crate) fn code(&self) -> &'static str {
        match (self.status, self.message.as_ref()) {
            (404, msg::ROOM_NOT_FOUND) => "room_not_found",
            (404, m) if m == crate::hub::proxy::NO_PARTICIPANT => "no_participant",
            (404, _) => "not_found",
            (503, m) if m == crate::hub::proxy::PARTICIPANT_OFFLINE => "participant_offline",
            (503, m) if m.contains("tunnel") => "no_tunnel",
            (503, m) if m == crate::hub::proxy::NO_PARTICIPANT => "no_participant",
            (503, _) => "unavailable",
            (400, _) | (422, _) => "invalid_request",
            (401, msg::INVALID_PASSWORD) => "invalid_password",
            (401, _) => "unauthorized",
            (403, _) => "forbidden",
            (405, _) => "method_not_allowed",
            (408, _) => "request_timeout",
            (410, _) => "room_removed",
            (413, _) => "body_too_large",
            (429, _) => "rate_limited",
            (501, _) => "not_implemented",
            (502, _) => "participant_unreachable",
            (504, _) => "participant_timeout",
            (508, _) => "loop_detected",
            _ => "internal_error",
        }
    }
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
        // Codes come from a fixed set, not from the message.
        let long = ApiError::new(
            502,
            "Participant unreachable: Connection failed: connection refused",
        );
        assert_eq!(long.code(), "participant_unreachable");
        assert_eq!(
            ApiError::unavailable("Participant is offline").code(),
            "participant_offline"
        );
    }
}
