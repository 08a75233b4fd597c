//! Basic auth for `/system/*` and the dashboard, with credentials read from `secret_mount_path`
//! like OpenFaaS; the dashboard's login sessions ([`session`]) are accepted too.

pub mod session;

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;
use tributary_core::auth::{
    AuthArgs, BasicAuth, DEFAULT_SECRET_MOUNT_PATH, PASSWORD_FILE, SecretError, USER_FILE,
};

use crate::state::{StateDir, StateError};

/// The user name of generated credentials, as OpenFaaS installs use.
pub const GENERATED_USER: &str = "admin";

/// Errors loading credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A secret file could not be used.
    #[error("basic_auth is on but its credentials cannot be read")]
    Secret(#[from] SecretError),
    /// Generated credentials could not be stored.
    #[error("basic_auth is on and no credentials were given, but they cannot be generated")]
    Generate(#[from] StateError),
}

/// Where the gateway's credentials came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// The files in `secret_mount_path` (OpenFaaS' way).
    SecretMount(std::path::PathBuf),
    /// Generated into the state directory (`created`: on this start).
    Generated {
        /// The folder holding `basic-auth-user` and `basic-auth-password`.
        dir: std::path::PathBuf,
        /// Whether they were created just now.
        created: bool,
    },
}

/// The credentials a gateway requires, or `None` when `basic_auth` is off. They come from
/// `secret_mount_path` when its files are there. Otherwise, when `secret_mount_path` is the
/// default one, they are generated once into the state directory (user `admin`, a random
/// password, files readable by this user only) and reused on every later start; a
/// `secret_mount_path` set to a folder without them is an error.
pub async fn gateway_credentials(
    auth: &AuthArgs,
    state: &StateDir,
) -> Result<Option<(Credentials, CredentialSource)>, AuthError> {
    if !auth.basic_auth {
        return Ok(None);
    }
    let mount = &auth.secret_mount_path;
    let mounted = tokio::fs::try_exists(mount.join(USER_FILE))
        .await
        .unwrap_or(false);
    let (dir, source) = if mounted || mount != Path::new(DEFAULT_SECRET_MOUNT_PATH) {
        (mount.clone(), CredentialSource::SecretMount(mount.clone()))
    } else {
        let dir = state.credentials();
        let created = generate_once(state, &dir).await?;
        (dir.clone(), CredentialSource::Generated { dir, created })
    };
    Ok(Some((Credentials::from_secret_mount(&dir).await?, source)))
}

/// Writes `admin` and a random password into `dir` unless a password is there; whether it did.
async fn generate_once(state: &StateDir, dir: &Path) -> Result<bool, StateError> {
    let state = state.clone();
    let dir = dir.to_owned();
    let joined = tokio::task::spawn_blocking(move || {
        if dir.join(PASSWORD_FILE).exists() {
            return Ok(false);
        }
        let mut random = [0u8; 24];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut random))
            .map_err(|source| StateError {
                path: "/dev/urandom".into(),
                what: "read random bytes for a password",
                source,
            })?;
        let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random);
        state.write_private(&dir.join(USER_FILE), GENERATED_USER.as_bytes())?;
        state.write_private(&dir.join(PASSWORD_FILE), password.as_bytes())?;
        Ok(true)
    })
    .await;
    joined.unwrap_or_else(|e| {
        Err(StateError {
            path: "credentials".into(),
            what: "generate credentials",
            source: std::io::Error::other(e),
        })
    })
}

/// The credentials `/system/*` requires.
#[derive(Debug, Clone)]
pub struct Credentials(BasicAuth);

impl Credentials {
    /// Credentials from explicit values.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self(BasicAuth::new(user, password))
    }

    /// Reads `basic-auth-user` and `basic-auth-password` from `dir`, trimming trailing whitespace.
    pub async fn from_secret_mount(dir: &Path) -> Result<Self, AuthError> {
        Ok(Self(BasicAuth::read(dir).await?))
    }

    /// Whether an `Authorization` header value carries these credentials (constant-time).
    pub fn matches_header(&self, value: &[u8]) -> bool {
        let Some((user, password)) = decode_basic(value) else {
            return false;
        };
        self.matches(&user, &password)
    }

    /// Whether `user` and `password` are these credentials (constant-time).
    pub fn matches(&self, user: &str, password: &str) -> bool {
        let user_ok = user.as_bytes().ct_eq(self.0.user.as_bytes());
        let password_ok = password.as_bytes().ct_eq(self.0.password.as_bytes());
        bool::from(user_ok & password_ok)
    }
}

fn decode_basic(value: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The header the dashboard sends with every API call; a request authenticated by the session
/// cookie alone must carry it unless it is a GET or HEAD (a cross-site form cannot set it).
pub const UI_HEADER: &str = "x-requested-with";

/// Who may use `/system/*` and the dashboard: holders of the credentials, or of a session.
pub struct Guard {
    /// The gateway's credentials.
    pub credentials: Credentials,
    /// Dashboard sessions.
    pub sessions: session::Sessions,
}

/// What a request's credentials allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The basic-auth header matches, or a live session and (for writes) the dashboard header.
    Allowed,
    /// A live session cookie, but a write without the dashboard header.
    CrossSite,
    /// Nothing valid.
    Denied,
}

impl Guard {
    /// What `request`'s headers allow.
    pub fn access(&self, method: &axum::http::Method, headers: &axum::http::HeaderMap) -> Access {
        if headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| self.credentials.matches_header(v.as_bytes()))
        {
            return Access::Allowed;
        }
        if !self.sessions.valid(headers) {
            return Access::Denied;
        }
        let safe = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
        if safe || headers.contains_key(UI_HEADER) {
            Access::Allowed
        } else {
            Access::CrossSite
        }
    }
}

/// Middleware that answers 401 (with `WWW-Authenticate`, except to the dashboard's own calls,
/// so browsers do not pop up a password dialog) unless the request carries the credentials or
/// a dashboard session.
pub async fn require_auth(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    match guard.access(request.method(), request.headers()) {
        Access::Allowed => next.run(request).await,
        Access::CrossSite => (
            StatusCode::FORBIDDEN,
            "Forbidden: a request authenticated by the dashboard's session cookie must send X-Requested-With\n",
        )
            .into_response(),
        Access::Denied => {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                "Unauthorized: basic auth credentials are required\n",
            )
                .into_response();
            if !request.headers().contains_key(UI_HEADER) {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"Restricted\""),
                );
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> String {
        let raw = format!("{user}:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    #[test]
    fn matches_only_exact_credentials() {
        let c = Credentials::new("admin", "s3cret:with:colons");
        assert!(c.matches_header(header("admin", "s3cret:with:colons").as_bytes()));
        assert!(!c.matches_header(header("admin", "s3cret").as_bytes()));
        assert!(!c.matches_header(header("root", "s3cret:with:colons").as_bytes()));
        assert!(!c.matches_header(b"Bearer abc"));
        assert!(!c.matches_header(b"Basic !!!notbase64"));
    }

    #[tokio::test]
    async fn reads_secret_mount_and_reports_missing_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Credentials::from_secret_mount(dir.path())
            .await
            .expect_err("missing");
        assert!(
            tributary_core::Chain(&err)
                .to_string()
                .contains("basic-auth-user"),
            "{err}"
        );
        std::fs::write(dir.path().join("basic-auth-user"), "admin\n").expect("write");
        std::fs::write(dir.path().join("basic-auth-password"), "pw\n").expect("write");
        let c = Credentials::from_secret_mount(dir.path())
            .await
            .expect("reads");
        assert!(c.matches_header(header("admin", "pw").as_bytes()));
        assert!(!format!("{c:?}").contains("pw\""));
    }
}
