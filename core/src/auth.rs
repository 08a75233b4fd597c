//! Basic-auth credentials, read from `secret_mount_path` the way OpenFaaS components do: the
//! files `basic-auth-user` and `basic-auth-password`, trailing whitespace trimmed.

use std::path::{Path, PathBuf};

use clap::builder::BoolishValueParser;

use crate::client::Auth;

/// Where OpenFaaS components find their basic-auth files unless told otherwise.
pub const DEFAULT_SECRET_MOUNT_PATH: &str = "/var/openfaas/secrets";

/// The file holding the user name.
pub const USER_FILE: &str = "basic-auth-user";
/// The file holding the password.
pub const PASSWORD_FILE: &str = "basic-auth-password";

/// Basic auth on a gateway's `/system/*` routes, as OpenFaaS components configure it: required by
/// the gateway, sent by its clients; the credentials are files in `secret_mount_path`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct AuthArgs {
    /// Basic auth on the gateway's /system/* routes: the gateway requires it, clients send it
    /// (credentials from secret_mount_path).
    #[arg(long, env = "basic_auth", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub basic_auth: bool,
    /// Folder with `basic-auth-user` and `basic-auth-password`.
    #[arg(long, env = "secret_mount_path", default_value = DEFAULT_SECRET_MOUNT_PATH)]
    pub secret_mount_path: PathBuf,
}

impl AuthArgs {
    /// How a client authenticates with these settings.
    pub fn client_auth(&self) -> Auth {
        if self.basic_auth {
            Auth::SecretMount(self.secret_mount_path.clone())
        } else {
            Auth::None
        }
    }
}

/// A basic-auth secret file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read.
    #[error("{} could not be read; create it or set secret_mount_path", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("{} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// A user name and password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl BasicAuth {
    /// Credentials from explicit values.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Reads `basic-auth-user` and `basic-auth-password` from `dir` without blocking the
    /// async runtime.
    pub async fn read(dir: &Path) -> Result<Self, SecretError> {
        Ok(Self {
            user: read_secret(&dir.join(USER_FILE)).await?,
            password: read_secret(&dir.join(PASSWORD_FILE)).await?,
        })
    }
}

async fn read_secret(path: &Path) -> Result<String, SecretError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
    let text = text.trim_end().to_owned();
    if text.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_secret_mount_and_names_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = BasicAuth::read(dir.path()).await.expect_err("missing");
        assert!(err.to_string().contains(USER_FILE), "{err}");
        std::fs::write(dir.path().join(USER_FILE), "admin\n").expect("write");
        std::fs::write(dir.path().join(PASSWORD_FILE), "\n").expect("write");
        let err = BasicAuth::read(dir.path()).await.expect_err("empty");
        assert!(err.to_string().contains("is empty"), "{err}");
        std::fs::write(dir.path().join(PASSWORD_FILE), "pw\n").expect("write");
        let auth = BasicAuth::read(dir.path()).await.expect("reads");
        assert_eq!(auth, BasicAuth::new("admin", "pw"));
        assert!(!format!("{auth:?}").contains("pw\""));
    }
}
