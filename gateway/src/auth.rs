//! Basic auth for `/system/*`, with credentials read from `secret_mount_path` like OpenFaaS.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;
use tributary_core::auth::{BasicAuth, SecretError};

/// Errors loading credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A secret file could not be used.
    #[error("basic_auth is on but its credentials cannot be read")]
    Secret(#[from] SecretError),
}

/// A user name and password pair.
#[derive(Clone)]
pub struct Credentials {
    user: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Credentials from explicit values.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Reads `basic-auth-user` and `basic-auth-password` from `dir`, trimming trailing whitespace.
    pub async fn from_secret_mount(dir: &Path) -> Result<Self, AuthError> {
        let BasicAuth { user, password } = BasicAuth::read(dir).await?;
        Ok(Self { user, password })
    }

    /// Whether an `Authorization` header value carries these credentials (constant-time).
    pub fn matches_header(&self, value: &[u8]) -> bool {
        let Some((user, password)) = decode_basic(value) else {
            return false;
        };
        let user_ok = user.as_bytes().ct_eq(self.user.as_bytes());
        let password_ok = password.as_bytes().ct_eq(self.password.as_bytes());
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

/// Middleware that answers 401 with `WWW-Authenticate` unless the request carries the credentials.
pub async fn require_basic_auth(
    State(credentials): State<Arc<Credentials>>,
    request: Request,
    next: Next,
) -> Response {
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| credentials.matches_header(v.as_bytes()));
    if authorized {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "Unauthorized: basic auth credentials are required\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Restricted\""),
    );
    response
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
