//! Admission: whether a request may go on, decided from its head alone, before a byte of its
//! body is read. In order: a CORS preflight always may; a proxied request that this hub
//! already forwarded is a loop (508); control routes are rate-limited per address (429); the
//! room of a room route must exist (404/410) and, when protected, the request must carry its
//! password (401, 429 after too many failures); `/metrics` needs the admin token when the hub
//! has one. What admission found (the room) is handed to the route's handler.

use std::net::IpAddr;
use std::sync::Arc;

use serde::Deserialize;

use super::auth;
use super::endpoints;
use super::limits::retry_secs;
use crate::http::{Request, RequestHead};
use crate::hub::HubInner;
use crate::hub::error::ApiError;
use crate::hub::rooms::Room;
use crate::hub::router::Route;

type Result<T> = std::result::Result<T, ApiError>;

/// What the hub decided from a request's head, before reading its body.
pub(crate) struct Admission {
    /// The room of a room route, looked up once.
    pub(crate) room: Option<Arc<Room>>,
    /// A join into a protected room without `Authorization`: the password is in the body (the
    /// TypeScript API's style), checked by [`check_body_password`] as soon as the (small) body
    /// is read.
    pub(crate) password_in_body: bool,
}

impl Admission {
    /// Outside any room, or inside one whose credentials are settled.
    pub(crate) fn of(room: Option<Arc<Room>>) -> Self {
        Admission {
            room,
            password_in_body: false,
        }
    }
}

/// Let a request through, from its head alone: not a forwarding loop, within its address's
/// control-route rate (all but the proxied requests and tunnels: those are the product,
/// bounded by connections; `/v1/models`, whose answer grows with the room, is counted),
/// and, inside a protected room, with the room's password.
pub(crate) async fn admit(
    hub: &HubInner,
    head: &RequestHead,
    route: &Route<'_>,
    ip: IpAddr,
) -> Result<Admission> {
    // A preflight, and the pages' files (the same bytes for everyone, bounded by connections).
    if matches!(route, Route::Preflight | Route::Asset { .. }) {
        return Ok(Admission::of(None));
    }
    if route.is_relayed() && endpoints::is_loop(head.header(endpoints::HOP_HEADER), &hub.instance) {
        return Err(ApiError::new(
            508,
            "Loop detected: this request was already forwarded by this hub (a participant's \
             endpoint leads back to the hub)",
        ));
    }
    if !route.is_relayed()
        && !matches!(route, Route::Tunnel { .. })
        && let Err(wait) = hub.control_rate.take(ip)
    {
        return Err(ApiError::too_many(
            "Too many requests from your address, slow down",
            retry_secs(wait),
        ));
    }
    authorize(hub, route, head, ip).await
}

#[derive(Deserialize)]
struct PasswordOnly {
    password: Option<String>,
}

/// The room password a request's head offers: `Authorization: Bearer`, else `x-api-key`
/// (Anthropic's SDKs), else (`/events`) a `password` query parameter.
fn offered_password<'r>(
    route: &Route<'_>,
    head: &'r RequestHead,
) -> Option<std::borrow::Cow<'r, [u8]>> {
    use std::borrow::Cow;
    if let Some(b) = auth::bearer(head) {
        return Some(Cow::Borrowed(b));
    }
    // Anthropic's SDKs (and Claude Code) send their key as `x-api-key`.
    if let Some(k) = head.header("x-api-key").map(<[u8]>::trim_ascii) {
        return Some(Cow::Borrowed(k));
    }
    match route {
        Route::Events { .. } => {
            let raw = head.query_param("password")?;
            let spaced = raw.replace('+', " ");
            let decoded = crate::hub::router::percent_decode(&spaced)?;
            Some(Cow::Owned(decoded.into_owned().into_bytes()))
        }
        _ => None,
    }
}

/// Before a room's route runs, from the head alone: the room exists (found once, here, and
/// handed to the handler), and the request carries its password if it is protected (401
/// "Invalid password" otherwise; 429 once an address has failed too often). A join may carry
/// the password in its body instead: then it is checked by [`check_body_password`] once the
/// body is read. `/metrics` needs the admin token when the hub has one.
async fn authorize(
    hub: &HubInner,
    route: &Route<'_>,
    head: &RequestHead,
    ip: IpAddr,
) -> Result<Admission> {
    if matches!(route, Route::Metrics) && hub.auth.admin_required() {
        hub.auth.check_admin(auth::bearer(head), ip)?;
        return Ok(Admission::of(None));
    }
    let Some(code) = route.room_code() else {
        return Ok(Admission::of(None));
    };
    let room = hub.state.room(code)?;
    // Deleting takes the host token, checked by the handler, not the password. The room's page,
    // summary and QR code say no more than `GET /rooms` does: the page asks for the password
    // and sends it with the requests that need it.
    let public = matches!(
        route,
        Route::DeleteRoom { .. } | Route::Room { .. } | Route::RoomQr { .. }
    );
    if room.secrets.protected() && !public {
        let offered = offered_password(route, head);
        if offered.is_none() && matches!(route, Route::Join { .. }) {
            hub.auth.check_not_blocked(ip)?;
            return Ok(Admission {
                room: Some(room),
                password_in_body: true,
            });
        }
        hub.auth
            .check_password(&room.secrets, offered.as_deref(), ip)
            .await?;
    }
    Ok(Admission::of(Some(room)))
}

/// A join's `password` body field, for a protected room (see [`authorize`]).
pub(crate) async fn check_body_password(
    hub: &HubInner,
    room: &Room,
    req: &Request,
    ip: IpAddr,
) -> Result<()> {
    let offered = serde_json::from_slice::<PasswordOnly>(&req.body)
        .ok()
        .and_then(|b| b.password);
    hub.auth
        .check_password(&room.secrets, offered.as_deref().map(str::as_bytes), ip)
        .await
}
