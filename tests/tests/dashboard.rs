//! The dashboard at `/ui/` in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core (`tests/ui/dashboard.mjs`, installed by `scripts/setup` with `npm ci`), on a
//! gateway running the example stack with its cron connector (`tributary up`). Screenshots go to
//! `$CARGO_TARGET_TMPDIR/ui-screenshots`; axe-core checks every page.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tributary_tests::{
    GatewayOptions, GatewayProcess, eventually, find_program, output_text, read_records,
    recorder_function, workspace_root,
};

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots")
}

/// Stores an async call that will fail; its call id.
async fn enqueue(gw: &GatewayProcess, function: &str) -> String {
    let r = gw
        .http
        .post(gw.url(&format!("/async-function/{function}")))
        .body("a payment")
        .send()
        .await
        .expect("async call");
    assert_eq!(r.status(), 202);
    r.headers()["x-call-id"].to_str().expect("id").to_owned()
}

#[tokio::test]
async fn the_dashboard_in_headless_chromium() {
    let chromium = find_program("chromium")
        .expect("chromium is missing: scripts/setup installs the Debian package chromium");
    let node = find_program("node").expect("node is missing: scripts/setup installs nodejs");
    let ui = workspace_root().join("tests/ui");
    assert!(
        ui.join("node_modules/playwright-core").is_dir()
            && ui.join("node_modules/axe-core").is_dir(),
        "tests/ui/node_modules is missing: scripts/setup runs `npm ci --prefix tests/ui`"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = GatewayProcess::start_with(
        GatewayOptions::default()
            .stack(workspace_root().join("examples/stack.yml"))
            .envs(&[("max_retry_attempts", "2"), ("rebuild_interval", "1s")]),
    )
    .await;
    let auth = gw
        .credentials()
        .expect("basic auth is on by default")
        .clone();

    // A function fired every 2 s by the cron connector `tributary up` runs.
    let tick = dir.path().join("tick.jsonl");
    let mut d = recorder_function("tick", "cron-function", &tick, &[]);
    d["annotations"]["schedule"] = json!("*/2 * * * * *");
    gw.deploy_ok(d).await;
    // An async call to a function that always fails: dead-lettered after two attempts.
    let flaky = dir.path().join("flaky.jsonl");
    gw.deploy_ok(recorder_function(
        "flaky",
        "none",
        &flaky,
        &[("ALWAYS_STATUS", "500")],
    ))
    .await;
    let call_id = enqueue(&gw, "flaky").await;
    eventually(
        Duration::from_secs(20),
        "the call is dead-lettered",
        || async {
            gw.get_json::<Vec<Value>>("/system/async-dead-letters")
                .await
                .iter()
                .any(|l| l["callId"] == call_id.as_str())
        },
    )
    .await;

    // A request carrying the basic-auth header is let in, as faas-cli and scripts send it.
    let page = gw.http.get(gw.url("/ui/")).send().await.expect("ui");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("body").contains("/ui/app.js"));
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = anonymous.get(gw.url("/ui/")).send().await.expect("ui");
    assert_eq!(
        (r.status().as_u16(), r.headers()["location"].to_str().ok()),
        (303, Some("/ui/login"))
    );

    let out = Command::new(node)
        .arg(ui.join("dashboard.mjs"))
        .current_dir(&ui)
        .env("UI_URL", &gw.base)
        .env("UI_USER", &auth.user)
        .env("UI_PASSWORD", &auth.password)
        .env("UI_SCREENSHOTS", screenshots())
        .env("CHROMIUM", chromium)
        .env("UI_DEAD_CALL_ID", &call_id)
        .env("UI_CRON_FUNCTION", "tick")
        .output()
        .expect("node runs");
    let text = output_text(&out);
    println!("{text}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{text}\n--- gateway ---\n{}",
        gw.logs()
    );
    let result: Value = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|j| serde_json::from_str(j).ok())
        .expect("a RESULT line");
    println!(
        "page weight: {} bytes {}; screenshots in {}",
        result["pageWeightBytes"],
        result["pageWeight"],
        screenshots().display()
    );
    assert!(
        result["pageWeightBytes"].as_u64().expect("weight") > 10_000,
        "{result}"
    );

    // The redriven call reached the fixed function.
    let statuses: Vec<Value> = read_records(&flaky)
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses.last(), Some(&json!(200)), "{statuses:?}");
}

/// The dashboard's auth without a browser: login, the session cookie's reach and its CSRF rule,
/// logout, the basic-auth header, public assets, security headers, and an open dashboard when
/// `basic_auth` is off.
#[tokio::test]
async fn dashboard_sessions_and_their_limits() {
    let gw = GatewayProcess::start().await;
    let auth = gw.credentials().expect("basic auth is on").clone();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = |password: &str| {
        browser
            .post(gw.url("/ui/login"))
            .form(&[("user", auth.user.as_str()), ("password", password)])
            .send()
    };
    let refused = login("wrong").await.expect("login");
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("set-cookie").is_none());
    assert!(
        refused
            .text()
            .await
            .expect("body")
            .contains("Wrong user name or password")
    );

    let ok = login(&auth.password).await.expect("login");
    assert_eq!(ok.status(), 303);
    let cookie = ok.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let session = cookie.split(';').next().expect("pair").to_owned();
    let with_session = |method: reqwest::Method, path: &str| {
        browser
            .request(method, gw.url(path))
            .header("cookie", &session)
    };
    let page = with_session(reqwest::Method::GET, "/ui/")
        .send()
        .await
        .expect("ui");
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let r = with_session(reqwest::Method::GET, "/system/functions")
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 200, "the session reads the API");
    // A write with the cookie alone (what a cross-site form could send) is refused.
    let r = with_session(reqwest::Method::POST, "/system/async-dead-letters/redrive")
        .send()
        .await
        .expect("write");
    assert_eq!(r.status(), 403);
    assert!(r.text().await.expect("body").contains("X-Requested-With"));
    let r = with_session(reqwest::Method::POST, "/system/async-dead-letters/redrive")
        .header("x-requested-with", "tributary-ui")
        .send()
        .await
        .expect("write");
    assert_eq!(r.status(), 202);
    // The dashboard's own calls get no WWW-Authenticate (no browser password popup); others do.
    let r = browser
        .get(gw.url("/system/functions"))
        .header("x-requested-with", "tributary-ui")
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_none());
    let r = browser
        .get(gw.url("/system/functions"))
        .send()
        .await
        .expect("list");
    assert!(r.headers().get("www-authenticate").is_some());
    // Assets are public (no secrets in them); a forged cookie is nothing.
    for asset in ["/ui/app.js", "/ui/app.css", "/ui/icon.svg", "/ui/login"] {
        let r = browser.get(gw.url(asset)).send().await.expect("asset");
        assert_eq!(r.status(), 200, "{asset}");
    }
    let r = browser
        .get(gw.url("/system/functions"))
        .header("cookie", "tributary_session=forged")
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 401);
    // Logout ends the session on the server, not only in the browser.
    let r = with_session(reqwest::Method::POST, "/ui/logout")
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .expect("cookie")
            .contains("Max-Age=0")
    );
    let r = with_session(reqwest::Method::GET, "/system/functions")
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 401);

    let open =
        GatewayProcess::start_with(GatewayOptions::default().env("basic_auth", "false")).await;
    let r = browser.get(open.url("/ui/")).send().await.expect("ui");
    assert_eq!(
        r.status(),
        200,
        "basic_auth=false: the dashboard is open like the API"
    );
    assert!(r.text().await.expect("body").contains(r#"data-auth="off""#));
    let r = browser
        .get(open.url("/ui/login"))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 303);
}
