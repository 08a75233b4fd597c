//! The dashboard at `/ui/`: a login page, then one page whose script reads and drives the
//! gateway's own REST API (`/system/*`, `/function/*`), polling it for live figures. Every asset
//! is compiled into the binary: it works with no internet, no CDN and no Node at run time.
//!
//! Auth is the gateway's: the login form checks the basic-auth credentials and starts a session
//! (an `HttpOnly`, `SameSite=Strict` cookie); a request carrying the basic-auth header is let in
//! as well. With `basic_auth` off the dashboard is open, like the API.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::auth::session::{clear_cookie, set_cookie};
use crate::auth::{Access, Guard};

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");
const ICON: &str = include_str!("assets/icon.svg");

/// How long a wrong password waits before its answer, to slow down guessing.
const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(400);

/// Headers on every dashboard page: only this origin's scripts, styles and connections; no
/// framing; no referrer.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
];

type Ui = State<Option<Arc<Guard>>>;

/// The dashboard's routes; `guard` is the gateway's auth (none: open).
pub(crate) fn router<S: Clone + Send + Sync + 'static>(guard: Option<Arc<Guard>>) -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route(
            "/ui/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/ui/icon.svg",
            get(|| async { asset("image/svg+xml", ICON) }),
        )
        .with_state(guard)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// An HTML page with the security headers, never cached.
fn page(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in SECURITY_HEADERS {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn allowed(guard: &Option<Arc<Guard>>, headers: &HeaderMap) -> bool {
    guard
        .as_ref()
        .is_none_or(|g| g.access(&Method::GET, headers) == Access::Allowed)
}

async fn index(State(guard): Ui, headers: HeaderMap) -> Response {
    if !allowed(&guard, &headers) {
        return Redirect::to("/ui/login").into_response();
    }
    let auth = if guard.is_some() { "on" } else { "off" };
    page(StatusCode::OK, INDEX.replace("{{auth}}", auth))
}

fn login_form(status: StatusCode, error: &str) -> Response {
    let error = if error.is_empty() {
        String::new()
    } else {
        format!(r#"<p class="error" role="alert">{error}</p>"#)
    };
    page(status, LOGIN.replace("{{error}}", &error))
}

async fn login_page(State(guard): Ui, headers: HeaderMap) -> Response {
    if guard.is_none() || allowed(&guard, &headers) {
        return Redirect::to("/ui/").into_response();
    }
    login_form(StatusCode::OK, "")
}

/// The login form's fields.
#[derive(Deserialize)]
struct Login {
    user: String,
    password: String,
}

async fn login(State(guard): Ui, headers: HeaderMap, Form(form): Form<Login>) -> Response {
    let Some(guard) = guard else {
        return Redirect::to("/ui/").into_response();
    };
    if !guard.credentials.matches(&form.user, &form.password) {
        tracing::warn!(user = %form.user, "dashboard login refused");
        tokio::time::sleep(FAILED_LOGIN_DELAY).await;
        return login_form(StatusCode::UNAUTHORIZED, "Wrong user name or password.");
    }
    let secure = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    let token = guard.sessions.create();
    tracing::info!(user = %form.user, "dashboard login");
    let mut response = Redirect::to("/ui/").into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&token, secure)) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

async fn logout(State(guard): Ui, headers: HeaderMap) -> Response {
    if let Some(guard) = guard {
        guard.sessions.end(&headers);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}
