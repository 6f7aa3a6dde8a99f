//! Room passwords, host tokens and the admin token.
//!
//! * A protected room keeps only an Argon2id hash of its password (PHC string, random salt).
//!   Argon2 costs tens of milliseconds and ~19 MiB on purpose, so it runs on the blocking pool,
//!   at most [`MAX_CONCURRENT_HASHES`] at a time, and only until the password is first verified:
//!   then the room remembers a keyed BLAKE2b digest of it (the key is random per process) and
//!   every later request costs one BLAKE2b and a constant-time compare, a microsecond.
//!   Because a room has one password, once it is known any other digest is wrong without
//!   running Argon2 again.
//! * The host token, returned once by `POST /rooms`, is 256 random bits; the room keeps its
//!   BLAKE2b-256 (a fast hash is right for a random secret: there is nothing to guess).
//! * Failed attempts (password, host token, admin token, tunnel secret) are counted per client
//!   address; past the allowance the address gets 429 with `Retry-After` before anything is
//!   checked.

use std::net::IpAddr;
use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use blake2::digest::{Mac, consts::U32};
use blake2::{Blake2b, Blake2bMac, Digest};
use tokio::sync::Semaphore;

use crate::http::limits::{IpSlot, PerIp};
use crate::hub::error::{ApiError, msg};
use crate::hub::guard::limits::{RateLimiter, retry_secs};

/// Argon2 computations running at once (each holds ~19 MiB for tens of ms).
pub const MAX_CONCURRENT_HASHES: usize = 2;
/// Argon2 verifications one address may have queued or running at once; more get 429 at once.
pub const MAX_HASHES_PER_ADDRESS: usize = 2;
/// Longest password accepted.
pub const MAX_PASSWORD: usize = 256;
/// Failed attempts an address may make in a burst…
pub const FAILURE_BURST: u32 = 10;
/// …and how many more it earns per minute.
pub const FAILURES_PER_MINUTE: f64 = 10.0;

/// A room's credentials, as kept in memory and (hashes only) in the state file.
#[derive(Debug, Default)]
pub struct RoomSecrets {
    /// Argon2id PHC string of the password, if the room is protected.
    pub password_hash: Option<String>,
    /// BLAKE2b-256 of the host token, hex. `None` only for rooms restored from a state file
    /// written before host tokens existed: those can be deleted by the admin alone.
    pub host_token_hash: Option<String>,
    /// Keyed digest of the password, once verified.
    verified: OnceLock<[u8; 32]>,
}

impl RoomSecrets {
    pub fn new(password_hash: Option<String>, host_token_hash: Option<String>) -> Self {
        RoomSecrets {
            password_hash,
            host_token_hash,
            verified: OnceLock::new(),
        }
    }

    pub fn protected(&self) -> bool {
        self.password_hash.is_some()
    }
}

/// Compare secrets in time independent of where they differ (their lengths are not secret:
/// both sides are digests or tokens of a fixed length).
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Argon2id hash (PHC string) of `password` with a fresh random salt. Slow: call off the
/// async threads.
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::encode_b64(&crate::hub::rooms::ids::random_bytes::<16>()?)
        .map_err(|e| ApiError::new(500, format!("Could not hash the password: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::new(500, format!("Could not hash the password: {e}")))
}

/// Whether `password` matches the PHC string `hash`. Slow, like [`hash_password`].
pub fn verify_password(hash: &str, password: &[u8]) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password, &h)
            .is_ok()
    })
}

/// BLAKE2b-256 of a high-entropy token, hex.
pub fn token_hash(token: &str) -> String {
    Blake2b::<U32>::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Bearer` credential of a request, if any.
pub fn bearer(head: &crate::http::RequestHead) -> Option<&[u8]> {
    let v = head.header("authorization")?;
    let scheme = v.get(..7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| v[7..].trim_ascii())
}

/// The hub's side of authentication: a per-process key for password digests, the Argon2
/// slots, the failed-attempt limiter and the admin token.
pub struct Auth {
    key: [u8; 32],
    hashing: Semaphore,
    /// Argon2 computations queued or running, per client address.
    hashing_per_ip: std::sync::Arc<PerIp>,
    failures: RateLimiter,
    admin_token: Option<String>,
}

impl Auth {
    /// Fails only if the OS random source does (the digest key must be secret).
    pub fn new(admin_token: Option<String>) -> Result<Self, crate::hub::rooms::ids::NoRandomness> {
        Ok(Auth {
            key: crate::hub::rooms::ids::random_bytes::<32>()?,
            hashing: Semaphore::new(MAX_CONCURRENT_HASHES),
            hashing_per_ip: std::sync::Arc::default(),
            failures: RateLimiter::new(FAILURES_PER_MINUTE / 60.0, FAILURE_BURST),
            admin_token,
        })
    }

    fn digest(&self, secret: &[u8]) -> [u8; 32] {
        // A 32-byte key is within BLAKE2b's 64-byte limit: `new_from_slice` cannot fail.
        let mut mac = Blake2bMac::<U32>::new_from_slice(&self.key).expect("32-byte key");
        mac.update(secret);
        mac.finalize().into_bytes().into()
    }

    /// 429 if `ip` has used up its failed attempts.
    pub fn check_not_blocked(&self, ip: IpAddr) -> Result<(), ApiError> {
        match self.failures.exhausted(ip) {
            Some(wait) => Err(Self::blocked(wait)),
            None => Ok(()),
        }
    }

    /// Count a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let _ = self.failures.take(ip);
        tracing::info!(%ip, "failed authentication attempt");
    }

    /// Run Argon2 off the async threads, within the concurrency bound.
    /// At most [`MAX_HASHES_PER_ADDRESS`] per address at once, like verifications (else one
    /// address creating protected rooms in parallel would queue Argon2 without bound).
    pub async fn hash(&self, password: String, ip: IpAddr) -> Result<String, ApiError> {
        let Some(_ticket) = self.hash_ticket(ip) else {
            return Err(ApiError::too_many(
                "Too many password hashes at once from your address, try again later",
                1,
            ));
        };
        let _slot = self
            .hashing
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable("Hub is shutting down"))?;
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ApiError::new(500, format!("Password hashing failed: {e}")))?
    }

    /// A place in `ip`'s Argon2 queue, if it has one free.
    fn hash_ticket(&self, ip: IpAddr) -> Option<IpSlot> {
        self.hashing_per_ip.take(ip, MAX_HASHES_PER_ADDRESS)
    }

    fn blocked(wait: std::time::Duration) -> ApiError {
        ApiError::too_many(
            "Too many failed attempts, try again later",
            retry_secs(wait),
        )
    }

    /// Check `offered` against a room's password. Unprotected rooms let everyone in.
    ///
    /// Every attempt that could be a guess is paid for before it is checked: once the room's
    /// password is known, a wrong one takes a token in the same step that finds it wrong; before
    /// that, an Argon2 verification takes a token *before* it is queued (given back if the
    /// password was right), and an address has at most [`MAX_HASHES_PER_ADDRESS`] in the
    /// queue. So parallel guesses beyond the allowance get 429 without touching Argon2.
    pub async fn check_password(
        &self,
        secrets: &RoomSecrets,
        offered: Option<&[u8]>,
        ip: IpAddr,
    ) -> Result<(), ApiError> {
        let Some(hash) = &secrets.password_hash else {
            return Ok(());
        };
        self.check_not_blocked(ip)?;
        let Some(offered) = offered.filter(|o| !o.is_empty()) else {
            return Err(ApiError::unauthorized(msg::INVALID_PASSWORD));
        };
        if let Some(ok) = self.check_remembered(secrets, offered) {
            return self.settle(ok, ip);
        }
        // Reserve the attempt, then a place in this address's queue.
        self.failures.take(ip).map_err(Self::blocked)?;
        let Some(_ticket) = self.hash_ticket(ip) else {
            self.failures.give_back(ip);
            return Err(ApiError::too_many(
                "Too many password checks at once from your address, try again later",
                1,
            ));
        };
        let ok = {
            let _slot = self
                .hashing
                .acquire()
                .await
                .map_err(|_| ApiError::unavailable("Hub is shutting down"))?;
            // A verification that finished while this one waited for a slot answers it.
            match self.check_remembered(secrets, offered) {
                Some(ok) => ok,
                None => {
                    let (hash, pw) = (hash.clone(), offered.to_vec());
                    let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &pw))
                        .await
                        .unwrap_or(false);
                    if ok {
                        let _ = secrets.verified.set(self.digest(offered));
                    }
                    ok
                }
            }
        };
        if ok {
            self.failures.give_back(ip);
            Ok(())
        } else {
            tracing::info!(%ip, "failed authentication attempt");
            Err(ApiError::unauthorized(msg::INVALID_PASSWORD))
        }
    }

    /// The outcome of a fast check: right passes; wrong takes a token (one step, so parallel
    /// guesses cannot all slip past the allowance), 429 once there is none.
    fn settle(&self, ok: bool, ip: IpAddr) -> Result<(), ApiError> {
        if ok {
            return Ok(());
        }
        self.failures.take(ip).map_err(Self::blocked)?;
        tracing::info!(%ip, "failed authentication attempt");
        Err(ApiError::unauthorized(msg::INVALID_PASSWORD))
    }

    /// The fast path: once a room's password has been verified, whether `offered` is it
    /// (a keyed BLAKE2b and a constant-time compare); `None` before the first verification.
    pub fn check_remembered(&self, secrets: &RoomSecrets, offered: &[u8]) -> Option<bool> {
        let known = secrets.verified.get()?;
        Some(same_secret(known, &self.digest(offered)))
    }

    /// Whether the hub requires the admin token to create and delete rooms.
    pub fn admin_required(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Whether `offered` is the admin token (false when there is none).
    pub fn is_admin(&self, offered: Option<&[u8]>) -> bool {
        match (&self.admin_token, offered) {
            (Some(t), Some(o)) => same_secret(t.as_bytes(), o),
            _ => false,
        }
    }

    /// Creating rooms: allowed to everyone, or only with the admin token when the hub has one.
    pub fn check_admin(&self, offered: Option<&[u8]>, ip: IpAddr) -> Result<(), ApiError> {
        if !self.admin_required() {
            return Ok(());
        }
        self.check_not_blocked(ip)?;
        if self.is_admin(offered) {
            Ok(())
        } else {
            if offered.is_some() {
                self.failed(ip);
            }
            Err(ApiError::unauthorized("Admin token required"))
        }
    }

    /// Deleting a room: its host token, or the admin token.
    pub fn check_host(
        &self,
        secrets: &RoomSecrets,
        offered: Option<&[u8]>,
        ip: IpAddr,
    ) -> Result<(), ApiError> {
        self.check_not_blocked(ip)?;
        if self.is_admin(offered) {
            return Ok(());
        }
        let host = match (&secrets.host_token_hash, offered) {
            (Some(h), Some(o)) => std::str::from_utf8(o)
                .is_ok_and(|o| same_secret(h.as_bytes(), token_hash(o).as_bytes())),
            _ => false,
        };
        if host {
            return Ok(());
        }
        if offered.is_some() {
            self.failed(ip);
        }
        Err(ApiError::new(
            403,
            "Only the room's host (with its hostToken) or the hub admin can delete it",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("correct horse"));
        assert!(verify_password(&h, b"correct horse"));
        assert!(!verify_password(&h, b"correct hors"));
        assert!(!verify_password("not a hash", b"x"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
    }

    #[tokio::test]
    async fn verify_once_then_remember() {
        let auth = Auth::new(None).unwrap();
        let secrets = RoomSecrets::new(Some(hash_password("pw").unwrap()), None);
        assert!(secrets.verified.get().is_none());
        auth.check_password(&secrets, Some(b"pw"), IP)
            .await
            .unwrap();
        assert!(secrets.verified.get().is_some());
        let e = auth
            .check_password(&secrets, Some(b"nope"), IP)
            .await
            .unwrap_err();
        assert_eq!((e.status, &*e.message), (401, msg::INVALID_PASSWORD));
        let e = auth.check_password(&secrets, None, IP).await.unwrap_err();
        assert_eq!(e.status, 401);
        // Unprotected rooms need nothing.
        let open = RoomSecrets::default();
        auth.check_password(&open, None, IP).await.unwrap();
    }

    #[tokio::test]
    async fn failures_are_limited_per_address() {
        let auth = Auth::new(None).unwrap();
        let secrets = RoomSecrets::new(Some(hash_password("pw").unwrap()), None);
        auth.check_password(&secrets, Some(b"pw"), IP)
            .await
            .unwrap();
        for _ in 0..FAILURE_BURST {
            let e = auth.check_password(&secrets, Some(b"x"), IP).await;
            assert_eq!(e.unwrap_err().status, 401);
        }
        let e = auth.check_password(&secrets, Some(b"pw"), IP).await;
        let e = e.unwrap_err();
        assert_eq!(e.status, 429);
        assert!(e.retry_after.is_some_and(|s| s >= 1));
        let other: IpAddr = "10.9.9.9".parse().unwrap();
        auth.check_password(&secrets, Some(b"pw"), other)
            .await
            .unwrap();
    }

    #[test]
    fn host_and_admin_tokens() {
        let auth = Auth::new(Some("admin".into())).unwrap();
        let token = crate::hub::rooms::ids::secret().unwrap();
        let secrets = RoomSecrets::new(None, Some(token_hash(&token)));
        auth.check_host(&secrets, Some(token.as_bytes()), IP)
            .unwrap();
        auth.check_host(&secrets, Some(b"admin"), IP).unwrap();
        assert_eq!(
            auth.check_host(&secrets, Some(b"guess"), IP)
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(auth.check_admin(None, IP).unwrap_err().status, 401);
        auth.check_admin(Some(b"admin"), IP).unwrap();
        Auth::new(None).unwrap().check_admin(None, IP).unwrap();
    }
}
