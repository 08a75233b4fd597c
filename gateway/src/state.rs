//! The state directory: where a gateway keeps what must outlive it and belongs to it alone:
//! generated credentials, the embedded queue, secrets, function folders and captured logs.
//!
//! Its place follows conventions: `state_dir` when given; systemd's `$STATE_DIRECTORY`; for root
//! (a system service) `/var/lib/tributary`; otherwise the XDG base-directory convention,
//! `$XDG_STATE_HOME/tributary`, else `~/.local/state/tributary`. Nothing lands in the working
//! directory. Folders are created private to the user (0700).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The folder a system service keeps its state in.
pub const SYSTEM_STATE_DIR: &str = "/var/lib/tributary";

/// A state directory that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("state directory {}: cannot {what}; set state_dir to a writable folder", path.display())]
pub struct StateError {
    /// The folder or file.
    pub path: PathBuf,
    /// What failed.
    pub what: &'static str,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Where the state directory is when `state_dir` is not given.
pub fn default_state_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(systemd) = std::env::var("STATE_DIRECTORY")
        .ok()
        .filter(|v| !v.is_empty())
    {
        // systemd may list several, separated by ':': the first is ours.
        let first = systemd.split(':').next().unwrap_or_default();
        return PathBuf::from(first);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from(SYSTEM_STATE_DIR);
    }
    if let Some(xdg) = env("XDG_STATE_HOME").filter(|p| p.is_absolute()) {
        return xdg.join("tributary");
    }
    match env("HOME") {
        Some(home) => home.join(".local/state/tributary"),
        None => PathBuf::from(SYSTEM_STATE_DIR),
    }
}

/// An open state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens `root` (creating it, private to this user) or the default place when `None`.
    pub fn open(root: Option<&Path>) -> Result<Self, StateError> {
        let root = root.map_or_else(default_state_dir, Path::to_path_buf);
        let dir = Self { root };
        dir.folder(&dir.root)?;
        Ok(dir)
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates `path` (and its parents) private to this user, if missing.
    pub fn folder(&self, path: &Path) -> Result<PathBuf, StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|source| StateError {
                path: path.to_owned(),
                what: "create the folder",
                source,
            })?;
        Ok(path.to_owned())
    }

    /// Where generated basic-auth credentials live (a `secret_mount_path` for clients).
    pub fn credentials(&self) -> PathBuf {
        self.root.join("credentials")
    }

    /// The embedded queue's database file.
    pub fn queue(&self) -> PathBuf {
        self.root.join("queue.db")
    }

    /// The secrets store (`/system/secrets`).
    pub fn secrets(&self) -> PathBuf {
        self.root.join("secrets")
    }

    /// One function's own folder (its secrets, its captured logs).
    pub fn function(&self, namespace: &str, name: &str) -> PathBuf {
        self.root.join("functions").join(namespace).join(name)
    }

    /// Writes `contents` to `path` readable by this user only (0600), replacing it atomically.
    pub fn write_private(&self, path: &Path, contents: &[u8]) -> Result<(), StateError> {
        let fail = |what, source| StateError {
            path: path.to_owned(),
            what,
            source,
        };
        if let Some(parent) = path.parent() {
            self.folder(parent)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, contents).map_err(|e| fail("write a file", e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail("make a file private", e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail("write a file", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_files_are_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(Some(&tmp.path().join("state"))).expect("opens");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(state.root()), 0o700);
        let file = state.credentials().join("basic-auth-password");
        state.write_private(&file, b"pw").expect("writes");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&state.credentials()), 0o700);
        assert_eq!(std::fs::read(&file).expect("reads"), b"pw");
        assert!(state.queue().starts_with(state.root()));
    }
}
