//! Dashboard sessions: after a login at `/ui/login`, a random token in an `HttpOnly`,
//! `SameSite=Strict` cookie stands for the gateway's credentials until it expires or the user
//! logs out. Kept in memory: a restart logs everyone out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

/// The cookie's name.
pub const COOKIE: &str = "tributary_session";
/// How long a session lasts.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The most sessions kept; the oldest goes when a new one would pass it.
const MAX_SESSIONS: usize = 1_000;

/// The live sessions; cheap to clone.
#[derive(Clone, Default)]
pub struct Sessions(Arc<Mutex<HashMap<String, Instant>>>);

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session; its token.
    pub fn create(&self) -> String {
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = Instant::now();
        let mut map = self.map();
        map.retain(|_, expires| *expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, e)| **e).map(|(t, _)| t.clone())
        {
            map.remove(&oldest);
        }
        map.insert(token.clone(), now + LIFETIME);
        token
    }

    /// Whether the request's cookie names a live session.
    pub fn valid(&self, headers: &HeaderMap) -> bool {
        cookie(headers).is_some_and(|token| {
            self.map()
                .get(token)
                .is_some_and(|expires| *expires > Instant::now())
        })
    }

    /// Ends the request's session, if any.
    pub fn end(&self, headers: &HeaderMap) {
        if let Some(token) = cookie(headers) {
            self.map().remove(token);
        }
    }
}

/// The session token in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value for `token` (`secure`: only over HTTPS).
pub fn set_cookie(token: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(value).expect("value"));
        h
    }

    #[test]
    fn a_created_session_is_valid_until_ended() {
        let s = Sessions::default();
        let token = s.create();
        assert_eq!(token.len(), 64);
        let h = with_cookie(&format!("other=1; {COOKIE}={token}"));
        assert!(s.valid(&h));
        assert!(!s.valid(&with_cookie(&format!("{COOKIE}=forged"))));
        assert!(!s.valid(&HeaderMap::new()));
        s.end(&h);
        assert!(!s.valid(&h));
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::default();
        let first = s.create();
        for _ in 0..MAX_SESSIONS {
            s.create();
        }
        assert_eq!(s.map().len(), MAX_SESSIONS);
        assert!(!s.valid(&with_cookie(&format!("{COOKIE}={first}"))));
    }
}
