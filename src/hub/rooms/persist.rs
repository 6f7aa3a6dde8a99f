//! Rooms that survive restarts (`serve --state FILE`).
//!
//! The rooms (not the participants: agents re-join by themselves) are written to FILE on every
//! change, before the change is acknowledged: to `FILE.tmp`, fsync'd, renamed over FILE, and the
//! directory fsync'd, so after a crash FILE holds either the old or the new state, never a
//! torn one. Saves are serialised and each writes a fresh snapshot, so a slow save can never
//! overwrite a newer one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::types::RoomInfo;

/// The state file's format version.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    rooms: Vec<SavedRoom>,
}

/// A room as saved: its public info and the hashes of its secrets (never the secrets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedRoom {
    #[serde(flatten)]
    pub info: RoomInfo,
    /// Argon2id PHC string of the room password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// BLAKE2b-256 of the host token, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_token_hash: Option<String>,
}

/// Where rooms are kept.
pub struct Store {
    path: PathBuf,
    tmp: PathBuf,
    /// Serialises saves.
    lock: Mutex<()>,
}

impl Store {
    pub fn new(path: impl Into<PathBuf>) -> Store {
        let path = path.into();
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        Store {
            path,
            tmp: tmp.into(),
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved rooms; none if the file does not exist yet.
    pub fn load(&self) -> io::Result<Vec<SavedRoom>> {
        let data = match fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let saved: Saved = serde_json::from_slice(&data).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a Gambiarra state file: {e}", self.path.display()),
            )
        })?;
        if saved.version != FORMAT_VERSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: state format {} is not supported (expected {FORMAT_VERSION})",
                    self.path.display(),
                    saved.version
                ),
            ));
        }
        Ok(saved.rooms)
    }

    /// Save atomically. `snapshot` is called with the save lock held, so the state written is
    /// the newest one.
    pub fn save(&self, snapshot: impl FnOnce() -> Vec<SavedRoom>) -> io::Result<()> {
        let _guard = crate::sync::lock(&self.lock);
        let saved = Saved {
            version: FORMAT_VERSION,
            rooms: snapshot(),
        };
        let data = serde_json::to_vec_pretty(&saved).map_err(io::Error::other)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&self.tmp, &self.path)?;
        // Make the rename itself durable.
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(code: &str) -> SavedRoom {
        SavedRoom {
            info: RoomInfo {
                id: format!("id-{code}"),
                code: code.into(),
                name: "n".into(),
                host_id: "h".into(),
                created_at: 1,
                password_protected: code == "BBBBBB",
            },
            password_hash: (code == "BBBBBB").then(|| "$argon2id$v=19$...".into()),
            host_token_hash: Some("ab".repeat(32)),
        }
    }

    #[test]
    fn round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("gambiarra-persist-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let store = Store::new(dir.join("state.json"));
        assert!(store.load().unwrap().is_empty());
        store.save(|| vec![room("AAAAAA"), room("BBBBBB")]).unwrap();
        assert_eq!(store.load().unwrap(), vec![room("AAAAAA"), room("BBBBBB")]);
        assert!(!dir.join("state.json.tmp").exists());
        fs::write(dir.join("state.json"), b"{garbage").unwrap();
        assert_eq!(store.load().unwrap_err().kind(), io::ErrorKind::InvalidData);
        fs::write(dir.join("state.json"), br#"{"version":99,"rooms":[]}"#).unwrap();
        assert!(
            store
                .load()
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
