//! The `Date` header (RFC 9110 §5.6.7, IMF-fixdate), formatted at most once per second per
//! thread and reused by every response written in that second.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

const DATE_LEN: usize = 29; // "Sun, 06 Nov 1994 08:49:37 GMT"

struct Cached {
    second: u64,
    text: [u8; DATE_LEN],
}

thread_local! {
    static CACHE: RefCell<Cached> = const { RefCell::new(Cached { second: u64::MAX, text: [b' '; DATE_LEN] }) };
}

/// Call `f` with the current date as an HTTP date.
pub(crate) fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.second != now {
            c.text = format_http_date(now);
            c.second = now;
        }
        f(&c.text)
    })
}

/// Format Unix seconds as IMF-fixdate.
pub(crate) fn format_http_date(secs: u64) -> [u8; DATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = [b' '; DATE_LEN];
    out[0..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3] = b',';
    two(&mut out[5..7], day as u64);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    let y = year as u64;
    two(&mut out[12..14], y / 100);
    two(&mut out[14..16], y % 100);
    two(&mut out[17..19], rem / 3600);
    out[19] = b':';
    two(&mut out[20..22], rem % 3600 / 60);
    out[22] = b':';
    two(&mut out[23..25], rem % 60);
    out[26..29].copy_from_slice(b"GMT");
    out
}

fn two(dst: &mut [u8], v: u64) {
    dst[0] = b'0' + (v / 10 % 10) as u8;
    dst[1] = b'0' + (v % 10) as u8;
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31); Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(
            &format_http_date(784_111_777),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(&format_http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &format_http_date(1_709_251_199),
            b"Thu, 29 Feb 2024 23:59:59 GMT"
        );
    }
}
