//! Random identifiers: room codes people can read out loud, room ids, UUID v4 client ids.

/// Room-code alphabet: upper-case letters and digits without the look-alikes 0/O and 1/I.
pub(crate) const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Characters in a room code.
pub(crate) const CODE_LEN: usize = 6;
/// Characters in a room id (nanoid's URL-safe alphabet and default length).
pub(crate) const ROOM_ID_LEN: usize = 21;
const ID_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";

/// The operating system's random source failed. Secrets (host tokens, participant secrets,
/// salts, the digest key) and ids are never made any other way: the request that needed one
/// fails (500), and a hub that cannot key itself does not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRandomness;

impl std::fmt::Display for NoRandomness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the operating system's random source failed")
    }
}

impl std::error::Error for NoRandomness {}

impl From<NoRandomness> for std::io::Error {
    fn from(e: NoRandomness) -> Self {
        std::io::Error::other(e)
    }
}

/// `N` bytes from the operating system's random source.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], NoRandomness> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|_| NoRandomness)?;
    Ok(buf)
}

/// A fresh 6-character room code (the caller retries on a collision).
pub(crate) fn room_code() -> Result<String, NoRandomness> {
    // 32 symbols: the low 5 bits of each byte are uniform.
    Ok(random_bytes::<CODE_LEN>()?
        .iter()
        .map(|b| CODE_ALPHABET[(b & 31) as usize] as char)
        .collect())
}

/// A fresh room id.
pub(crate) fn room_id() -> Result<String, NoRandomness> {
    Ok(random_bytes::<ROOM_ID_LEN>()?
        .iter()
        .map(|b| ID_ALPHABET[(b & 63) as usize] as char)
        .collect())
}

/// A random UUID v4 in its canonical text form.
pub(crate) fn uuid_v4() -> Result<String, NoRandomness> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut s = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(char::from(b"0123456789abcdef"[(byte >> 4) as usize]));
        s.push(char::from(b"0123456789abcdef"[(byte & 15) as usize]));
    }
    Ok(s)
}

/// A fresh 256-bit secret, hex-encoded.
pub(crate) fn secret() -> Result<String, NoRandomness> {
    Ok(random_bytes::<32>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Normalise a room code from a URL: upper-case, and only if it could be a code at all.
pub(crate) fn normalize_code(code: &str) -> Option<Code> {
    let bytes: [u8; CODE_LEN] = code.as_bytes().try_into().ok()?;
    bytes
        .iter()
        .all(u8::is_ascii_alphanumeric)
        .then(|| Code(bytes.map(|b| b.to_ascii_uppercase())))
}

/// A room code in the form the hub keys rooms by (upper case), on the stack: every room
/// request looks its room up, and this spares that lookup an allocation.
pub(crate) struct Code([u8; CODE_LEN]);

impl Code {
    pub(crate) fn as_str(&self) -> &str {
        // ASCII letters and digits only (checked by `normalize_code`), so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let c = room_code().unwrap();
        assert_eq!(c.len(), 6);
        assert!(c.bytes().all(|b| CODE_ALPHABET.contains(&b)));
        assert!(!c.contains(['0', 'O', '1', 'I']));
        assert_eq!(room_id().unwrap().len(), ROOM_ID_LEN);
        let u = uuid_v4().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(uuid_v4(), uuid_v4());
        assert_eq!(secret().unwrap().len(), 64);
        assert_eq!(normalize_code("abc234").unwrap().as_str(), "ABC234");
        assert!(normalize_code("abc/34").is_none());
        assert!(normalize_code("abc23").is_none());
        assert!(normalize_code("abc2345").is_none());
        assert!(normalize_code("abcdé").is_none());
    }
}
