//! Rooms that survive restarts (`serve --state FILE`).
//!
//! The rooms (not the participants: agents re-join by themselves) are written to FILE on every
//! change, before the change is acknowledged: to `FILE.tmp`, fsync'd, renamed over FILE, and the
//! directory fsync'd, so after a crash FILE holds either the old or the new state, never a
//! torn one. The writing and fsync'ing happen on tokio's blocking pool, not on the threads that
//! serve requests. Each snapshot is numbered when it is taken; saves are serialised and one
//! older than the file's is skipped (the newer file already holds its change), so a slow save
//! can never overwrite a newer one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::types::RoomInfo;

/// The state file's format version.
pub(crate) const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    rooms: Vec<SavedRoom>,
}

/// A room as saved: its public info and the hashes of its secrets (never the secrets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SavedRoom {
    #[serde(flatten)]
    pub(crate) info: RoomInfo,
    /// Argon2id PHC string of the room password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) password_hash: Option<String>,
    /// BLAKE2b-256 of the host token, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) host_token_hash: Option<String>,
}

/// Where rooms are kept.
pub(crate) struct Store {
    path: PathBuf,
    tmp: PathBuf,
    /// Serialises writes; holds the number of the snapshot the file holds.
    written: Mutex<u64>,
    /// Serialises taking a snapshot with numbering it; holds the last number given.
    taken: Mutex<u64>,
}

/// The rooms at one moment, numbered in the order snapshots were taken.
pub(crate) struct Snapshot {
    number: u64,
    rooms: Vec<SavedRoom>,
}

impl Store {
    pub(crate) fn new(path: impl Into<PathBuf>) -> Store {
        let path = path.into();
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        Store {
            path,
            tmp: tmp.into(),
            written: Mutex::new(0),
            taken: Mutex::new(0),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The saved rooms; none if the file does not exist yet.
    pub(crate) fn load(&self) -> io::Result<Vec<SavedRoom>> {
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

    /// Take a snapshot (`rooms` is called with the numbering lock held, so numbers follow the
    /// order of the snapshots' contents).
    pub(crate) fn snapshot(&self, rooms: impl FnOnce() -> Vec<SavedRoom>) -> Snapshot {
        let mut taken = crate::sync::lock(&self.taken);
        *taken += 1;
        Snapshot {
            number: *taken,
            rooms: rooms(),
        }
    }

    /// Write `snapshot` durably, on the blocking pool.
    pub(crate) async fn save(self: &Arc<Self>, snapshot: Snapshot) -> io::Result<()> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write(snapshot))
            .await
            .map_err(io::Error::other)?
    }

    /// Write atomically, unless the file already holds a newer snapshot.
    pub(crate) fn write(&self, snapshot: Snapshot) -> io::Result<()> {
        let mut written = crate::sync::lock(&self.written);
        if *written >= snapshot.number {
            return Ok(());
        }
        let saved = Saved {
            version: FORMAT_VERSION,
            rooms: snapshot.rooms,
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
        *written = snapshot.number;
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
                routing: None,
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
        let older = store.snapshot(|| vec![room("AAAAAA")]);
        let newer = store.snapshot(|| vec![room("AAAAAA"), room("BBBBBB")]);
        store.write(newer).unwrap();
        assert_eq!(store.load().unwrap(), vec![room("AAAAAA"), room("BBBBBB")]);
        // A snapshot older than the file's is not written over it.
        store.write(older).unwrap();
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
