//! The dashboard end to end in a real headless Chromium (driven over WebDriver by
//! chromedriver): log in, read the overview, filter the device list, back a device up
//! by hand and watch the result arrive, look at the jobs, log out.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `.ci/run` installs them). Without them this test fails, it does
//! not skip. Full-page screenshots of every page visited land in
//! `target/screenshots/`.

use crate::common::fleet::{Fleet, FleetOptions};
use crate::common::web::{router, token};
use base64::Engine;
use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use rosbackup::ErrorKind;
use rosbackup::access::Role;
use rosbackup::queue::JobListState;
use rosbackup::report::DeviceState;
use rosbackup::sim::{Fault, SimConfig};
use rosbackup::web::AuthMode;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The longest any one page step may take (page loads, JS redirects).
const STEP: Duration = Duration::from_secs(20);
/// The longest a manual backup may take to show its outcome.
const BACKUP: Duration = Duration::from_secs(60);

// ---- chromedriver ------------------------------------------------------------------

/// A chromedriver child process, killed (with the browsers it started) on drop.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    /// Start chromedriver on a free loopback port and wait until `/status` says ready.
    async fn start(log: &Path) -> ChromeDriver {
        for (path, what) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: this test drives a real {what}. Install Debian's \
                 `chromium` and `chromium-driver` packages (`.ci/run` installs them)."
            );
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().expect("local addr").port()
        };
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so drop can take the browser down with it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let mut driver = ChromeDriver { child, port };
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = driver.child.try_wait().expect("try_wait") {
                panic!(
                    "chromedriver exited at start ({status}); see {}",
                    log.display()
                );
            }
            if driver.ready().await {
                return driver;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer /status within {STEP:?}; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `GET /status` answers `"ready": true` (within a second).
    async fn ready(&self) -> bool {
        tokio::time::timeout(Duration::from_secs(1), status(self.port))
            .await
            .ok()
            .flatten()
            .is_some_and(|v| v["value"]["ready"] == json!(true))
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

/// chromedriver's `/status` body, read by its Content-Length (chromedriver keeps the
/// connection open).
async fn status(port: u16) -> Option<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(usize::MAX);
        if body.len() >= len {
            return serde_json::from_str(&body[..len]).ok();
        }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // The group holds chromedriver and whatever browser it left behind.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on a process group this guard created; no memory involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chromedriver-specific endpoint of the current session (`POST session/{id}/{path}`).
#[derive(Debug)]
struct ChromeCommand {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for ChromeCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(self.body.to_string()))
    }
}

async fn chrome(c: &Client, path: &'static str, body: Value) -> Value {
    c.issue_cmd(ChromeCommand { path, body })
        .await
        .unwrap_or_else(|e| panic!("chromedriver {path}: {e}"))
}

/// A Chrome DevTools Protocol command through chromedriver.
async fn cdp(c: &Client, cmd: &str, params: Value) -> Value {
    chrome(
        c,
        "goog/cdp/execute",
        json!({ "cmd": cmd, "params": params }),
    )
    .await
}

// ---- browser helpers ---------------------------------------------------------------

struct Browser {
    c: Client,
    base: String,
    shots: PathBuf,
    /// Console messages seen so far: (page, level, message).
    console: Vec<(String, String, String)>,
}

impl Browser {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn goto(&self, path: &str) {
        self.c
            .goto(&self.url(path))
            .await
            .unwrap_or_else(|e| panic!("goto {path}: {e}"));
    }

    async fn path_and_query(&self) -> String {
        let u = self.c.current_url().await.expect("current url");
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    /// Wait (polling, with a deadline) until `css` matches an element.
    async fn wait(&self, css: &str, within: Duration) -> Element {
        match self
            .c
            .wait()
            .at_most(within)
            .every(Duration::from_millis(100))
            .for_element(Locator::Css(css))
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let at = self.path_and_query().await;
                let text = self.body_text().await;
                panic!("no `{css}` within {within:?} on {at}: {e}\npage text:\n{text}")
            }
        }
    }

    async fn find(&self, css: &str) -> Element {
        self.c
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("find `{css}`: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("element text")
    }

    async fn body_text(&self) -> String {
        self.c
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Wait until the current path (and query) satisfies `ok`.
    async fn wait_for_location(&self, what: &str, ok: impl Fn(&url::Url) -> bool) -> url::Url {
        let deadline = Instant::now() + STEP;
        loop {
            let u = self.c.current_url().await.expect("current url");
            if ok(&u) {
                return u;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {STEP:?} waiting for {what}; the browser is at {u}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A full-page PNG screenshot, and the console messages the page logged.
    async fn shot(&mut self, name: &str) {
        let metrics = cdp(&self.c, "Page.getLayoutMetrics", json!({})).await;
        let size = &metrics["cssContentSize"];
        let (w, h) = (
            size["width"].as_f64().unwrap_or(1400.0).ceil(),
            size["height"].as_f64().unwrap_or(1000.0).ceil(),
        );
        let png = cdp(
            &self.c,
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": w, "height": h, "scale": 1 },
            }),
        )
        .await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png["data"].as_str().expect("screenshot data"))
            .expect("screenshot base64");
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{name}: the screenshot is not a PNG"
        );
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        eprintln!("screenshot: {} ({w}x{h})", path.display());
        self.collect_console(name).await;
    }

    async fn collect_console(&mut self, page: &str) {
        for (level, message) in self.drain_console().await {
            eprintln!("console [{page}] {level}: {message}");
            self.console.push((page.to_string(), level, message));
        }
    }

    /// The console messages logged since the last call: (level, message).
    async fn drain_console(&self) -> Vec<(String, String)> {
        let logs = chrome(&self.c, "se/log", json!({ "type": "browser" })).await;
        logs.as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let text = |k: &str| e[k].as_str().unwrap_or("").to_string();
                (text("level"), text("message"))
            })
            .collect()
    }
}

// ---- expectations from the fleet ---------------------------------------------------

/// The state a simulated device ends in after its first backup attempt.
fn expected_state(fault: Option<Fault>) -> DeviceState {
    match fault {
        None => DeviceState::Ok,
        Some(Fault::Auth) => DeviceState::BlockedAuth,
        Some(Fault::Refuse) => DeviceState::Offline,
        Some(f) => panic!("this test has no expectation for fault {f}"),
    }
}

/// What the device list tells the operator to do about a device in `state`.
fn expected_hint(state: DeviceState) -> &'static str {
    match state {
        DeviceState::BlockedAuth => ErrorKind::AuthFailed.hint(),
        DeviceState::Offline => ErrorKind::ConnectionRefused.hint(),
        s => panic!("no hint expected for {s:?}"),
    }
}

/// Config lines of an export that must never show up on a page: every non-comment
/// line that sets something, including `/system identity`'s `set name=<identity>`.
fn secret_lines(export: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(export);
    let mut out = Vec::new();
    let mut menu = "";
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('/') {
            menu = l;
            continue;
        }
        if l.starts_with('#') || !l.contains('=') {
            continue;
        }
        if menu == "/system identity" || l.len() >= 24 {
            out.push(l.to_string());
        }
    }
    out
}

// ---- the test ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let started = Instant::now();
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let shots = target.join("screenshots");
    std::fs::create_dir_all(&shots).expect("create target/screenshots");
    // Browser first: a machine without it fails before any fleet is built.
    let driver = ChromeDriver::start(&shots.join("chromedriver.log")).await;

    let fleet = Fleet::start(FleetOptions {
        sim: SimConfig {
            devices: 12,
            faults: "auth=2,refuse=1".parse().expect("fault spec"),
            ..FleetOptions::default().sim
        },
        // "Back up now" twice on one device within seconds (before and after its pinned
        // key is changed) must be two backups here, not one joined request.
        manual_window: std::time::Duration::ZERO,
        ..FleetOptions::default()
    })
    .await;
    fleet.import(None).await;
    let (stop_worker, worker, _env) = fleet.spawn_worker("browser-test", 8);
    let (stop_enqueuer, enqueuer) = fleet.spawn_enqueuer();

    let (app, _state) = router(&fleet, AuthMode::Required);
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, http) = rosbackup::http::serve("127.0.0.1:0", app, async move {
        let _ = http_stopped.await;
    })
    .await
    .expect("serve the dashboard");

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--window-size=1400,1000",
            ],
        }),
    );
    caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
    // Everything that can fail runs inside catch_unwind, so cleanup always happens.
    let mut session: Option<Client> = None;
    let outcome = std::panic::AssertUnwindSafe(async {
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| panic!("open a Chromium session through chromedriver: {e}"));
        session = Some(client.clone());
        let mut browser = Browser {
            c: client,
            base: format!("http://{addr}"),
            shots,
            console: Vec::new(),
        };
        flow(&fleet, &mut browser).await;
    })
    .catch_unwind()
    .await;

    // Clean up whatever happened.
    if let Some(client) = session {
        let _ = client.close().await;
    }
    drop(driver);
    let _ = stop_http.send(());
    let _ = http.await;
    let _ = stop_enqueuer.send(());
    let _ = enqueuer.await;
    let _ = stop_worker.send(());
    let _ = worker.await;
    fleet.cleanup().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    eprintln!("browser test took {:.1} s", started.elapsed().as_secs_f64());
}

async fn flow(fleet: &Fleet, b: &mut Browser) {
    let devices = fleet.sim.devices().to_vec();
    let expected: BTreeMap<Uuid, DeviceState> = devices
        .iter()
        .map(|d| (d.id, expected_state(d.fault)))
        .collect();
    let healthy = expected.values().filter(|s| **s == DeviceState::Ok).count();
    assert!(
        healthy > 0 && healthy < devices.len(),
        "the fleet needs healthy and faulty devices"
    );

    fleet
        .wait_for(
            Duration::from_secs(120),
            "every device attempted once and every healthy one backed up",
            || async {
                let c = fleet.store().counts(None).await.expect("counts");
                c.never == 0 && fleet.count_status("success").await == healthy as i64
            },
        )
        .await;
    let admin = token(fleet, "browser-admin", Role::Admin, None).await;

    // ---- login -----------------------------------------------------------------------
    b.goto("/").await;
    let at = b
        .wait_for_location("the redirect to the login page", |u| u.path() == "/login")
        .await;
    assert_eq!(
        at.query(),
        Some("next=/"),
        "the login page remembers where we were going"
    );
    let field = b.wait("#token", STEP).await;
    b.shot("01-login").await;
    field.send_keys(&admin).await.expect("type the token");
    b.find("#login").await.click().await.expect("submit");

    // ---- overview --------------------------------------------------------------------
    b.wait("#freshness", STEP).await;
    assert_eq!(b.path_and_query().await, "/", "login returns to `next`");
    let fresh = format!("{:.1} %", healthy as f64 * 100.0 / devices.len() as f64);
    assert_eq!(b.text("#freshness").await, fresh, "fleet freshness");
    for st in DeviceState::ALL {
        let want = expected.values().filter(|s| **s == st).count();
        let tile = b.text(&format!("#state-{} .n", st.as_str())).await;
        assert_eq!(
            tile,
            want.to_string(),
            "the `{}` tile shows {tile}, the fleet has {want}",
            st.as_str()
        );
    }
    let attention = expected.values().filter(|s| s.needs_attention()).count();
    let button = b.text("a[href='/devices?status=attention']").await;
    assert!(
        button.starts_with(&format!("{attention} need attention")),
        "attention button says {button:?}, expected {attention}"
    );
    assert!(
        b.c.find(Locator::Css("header.top a[href='/'].active"))
            .await
            .is_ok(),
        "Overview is the active tab"
    );
    b.shot("02-overview").await;

    // ---- devices, filtered -----------------------------------------------------------
    b.find("header.top nav a[href='/devices']")
        .await
        .click()
        .await
        .expect("open Devices");
    let select = b.wait("select#status", STEP).await;
    assert_eq!(b.path_and_query().await, "/devices");
    let all_rows = b.c.find_all(Locator::Css("#devices tr[data-device]")).await;
    assert_eq!(
        all_rows.expect("rows").len(),
        devices.len(),
        "the unfiltered list shows every device"
    );
    select
        .select_by_value("attention")
        .await
        .expect("choose Needs attention");
    // The select submits its form from JS: the new page has the option selected.
    b.wait("select#status option[value='attention'][selected]", STEP)
        .await;
    let at = b.path_and_query().await;
    assert!(
        at.starts_with("/devices?") && at.contains("status=attention"),
        "the filter is in the URL: {at}"
    );
    let mut listed: BTreeMap<Uuid, (String, String)> = BTreeMap::new();
    for row in
        b.c.find_all(Locator::Css("#devices tbody tr[data-device]"))
            .await
            .expect("rows")
    {
        let id: Uuid = row
            .attr("data-device")
            .await
            .expect("data-device")
            .and_then(|v| v.parse().ok())
            .expect("data-device is a device id");
        let state = row
            .attr("data-state")
            .await
            .expect("data-state")
            .unwrap_or_default();
        let hint = match row.find(Locator::Css(".hint")).await {
            Ok(h) => h.text().await.expect("hint text"),
            Err(_) => String::new(),
        };
        assert!(
            listed.insert(id, (state, hint)).is_none(),
            "device {id} listed twice"
        );
    }
    let faulty: BTreeSet<Uuid> = expected
        .iter()
        .filter(|(_, s)| s.needs_attention())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        listed.keys().copied().collect::<BTreeSet<_>>(),
        faulty,
        "\"Needs attention\" lists exactly the faulty devices"
    );
    for (id, (state, hint)) in &listed {
        let want = expected[id];
        assert_eq!(state, want.as_str(), "state of {id}");
        assert_eq!(hint, expected_hint(want), "hint for {id} ({state})");
    }
    assert_eq!(
        b.text("#device-count").await,
        format!("{} matching", faulty.len())
    );
    b.shot("03-devices-attention").await;

    // ---- one healthy device: back up now ---------------------------------------------
    let dev = devices
        .iter()
        .find(|d| d.fault.is_none())
        .expect("a healthy device");
    b.goto(&format!("/devices/{}", dev.id)).await;
    let heading = b.wait("h1", STEP).await.text().await.expect("h1");
    assert!(
        heading.contains(&dev.name),
        "device page heading {heading:?}"
    );
    let runs_before =
        b.c.find_all(Locator::Css("#runs tr[data-status]"))
            .await
            .expect("runs")
            .len();
    assert!(runs_before >= 1, "the scheduled backup is in the history");
    assert!(
        b.c.find(Locator::Css("#runs tr[data-trigger='manual']"))
            .await
            .is_err(),
        "no manual run before we ask for one"
    );
    // A state-changing post with a wrong CSRF token is refused, even with the session.
    b.collect_console("04-device-before-backup").await;
    let forged =
        b.c.execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], { method: 'POST', credentials: 'same-origin', redirect: 'manual',
                                   body: new URLSearchParams({ csrf: 'forged' }) })
               .then(r => done(r.status), e => done(String(e)));",
            vec![json!(format!("/devices/{}/backup", dev.id))],
        )
        .await
        .expect("forged post");
    assert_eq!(forged, json!(403), "a backup post with a forged CSRF token");
    // Chromium logs that refusal as a failed resource load: expected, so set it aside.
    for (level, message) in b.drain_console().await {
        assert!(
            message.contains("/backup") && message.contains("403"),
            "unexpected console message around the forged post: {level}: {message}"
        );
    }
    b.find("#backup-now")
        .await
        .click()
        .await
        .expect("Back up now");
    let at = b
        .wait_for_location("the device page with the job", |u| {
            u.path() == format!("/devices/{}", dev.id) && u.query_pairs().any(|(k, _)| k == "job")
        })
        .await;
    let job: String = at
        .query_pairs()
        .find(|(k, _)| k == "job")
        .map(|(_, v)| v.into_owned())
        .expect("job id");
    let result = b.wait("#job-result", BACKUP).await;
    assert_eq!(
        result.attr("data-status").await.expect("attr").as_deref(),
        Some("success"),
        "manual backup outcome: {}",
        result.text().await.unwrap_or_default()
    );
    // The history refreshes when the outcome arrives.
    let manual = b
        .wait(
            &format!("#runs tr[data-trigger='manual'][data-job='{job}']"),
            STEP,
        )
        .await;
    assert_eq!(
        manual.attr("data-status").await.expect("attr").as_deref(),
        Some("success"),
        "the manual run in the history"
    );
    let export = fleet
        .sim
        .last_export(dev.id)
        .expect("the simulator served an export");
    let lines = secret_lines(&export);
    assert!(
        lines.iter().any(|l| l.starts_with("set name=")),
        "the export has its /system identity line: {lines:?}"
    );
    let source = b.c.source().await.expect("page source");
    let text = b.body_text().await;
    for l in &lines {
        assert!(
            !source.contains(l.as_str()) && !text.contains(l.as_str()),
            "the device page shows config text: {l:?}"
        );
    }
    b.shot("04-device-after-backup").await;

    // ---- a changed host key: old and new fingerprint, then reset ---------------------
    // The router "was replaced": the pinned key no longer matches what it presents.
    let real_fp = fleet
        .sim
        .host_key_fingerprint(dev.id)
        .expect("the simulator's fingerprint");
    let old_fp = "SHA256:pinnedBeforeTheRouterWasReplacedAAAAAAAAAAA";
    sqlx::query("UPDATE devices SET ssh_host_key_fingerprint = $2 WHERE id = $1")
        .bind(dev.id)
        .bind(old_fp)
        .execute(fleet.store().pool())
        .await
        .expect("pin another key");
    b.goto(&format!("/devices/{}", dev.id)).await;
    b.wait("#backup-now", STEP)
        .await
        .click()
        .await
        .expect("Back up now");
    let result = b.wait("#job-result", BACKUP).await;
    assert_eq!(
        result.attr("data-status").await.expect("attr").as_deref(),
        Some("failed"),
        "a backup against the wrong pinned key: {}",
        result.text().await.unwrap_or_default()
    );
    b.goto(&format!("/devices/{}", dev.id)).await;
    let hint = b.wait("p.big-hint", STEP).await.text().await.expect("hint");
    assert!(hint.contains("the host key changed"), "hint: {hint:?}");
    b.find("#fix-host-key")
        .await
        .click()
        .await
        .expect("open the host key page from the hint");
    b.wait_for_location("the host key page", |u| {
        u.path() == format!("/devices/{}/host-key", dev.id)
    })
    .await;
    assert_eq!(b.text("#old-fingerprint").await, old_fp);
    assert_eq!(b.text("#new-fingerprint").await, real_fp);
    b.shot("05-host-key").await;
    b.find("#action-reset-host-key")
        .await
        .click()
        .await
        .expect("Reset host key");
    b.c.accept_alert().await.expect("confirm the reset");
    b.wait_for_location("the device page after the reset", |u| {
        u.path() == format!("/devices/{}", dev.id) && u.query_pairs().any(|(k, _)| k == "done")
    })
    .await;
    fleet
        .wait_for(
            BACKUP,
            "the next backup pins the key the device presents",
            || async {
                let d = fleet.store().device(dev.id).await.expect("device");
                d.is_some_and(|d| {
                    d.ssh_host_key_fingerprint.as_deref() == Some(real_fp.as_str())
                        && d.blocked_reason.is_none()
                })
            },
        )
        .await;

    // ---- a refused login: the hint leads to the credentials form ---------------------
    let locked = devices
        .iter()
        .find(|d| d.fault == Some(Fault::Auth))
        .expect("a device with a wrong password");
    b.goto(&format!("/devices/{}", locked.id)).await;
    b.wait("#fix-credentials", STEP)
        .await
        .click()
        .await
        .expect("open the credentials form from the hint");
    b.wait_for_location("the credentials form", |u| {
        u.path() == format!("/devices/{}/credentials", locked.id)
    })
    .await;
    let user = b.wait("#username", STEP).await;
    assert_eq!(
        user.prop("value").await.expect("username").as_deref(),
        Some(locked.username.as_str()),
        "the username is filled in"
    );
    let pass = b.find("#password").await;
    assert_eq!(
        pass.attr("type").await.expect("type").as_deref(),
        Some("password")
    );
    assert_eq!(
        pass.prop("value").await.expect("value").as_deref(),
        Some(""),
        "the password field is write-only"
    );
    let source = b.c.source().await.expect("page source");
    assert!(
        !source.contains(&locked.password),
        "the credentials form shows the stored password"
    );
    assert!(
        b.c.find(Locator::Css("#credentials input[name='csrf']"))
            .await
            .is_ok(),
        "the form carries the CSRF token"
    );
    // A refused value comes back with the reason, nothing saved.
    user.clear().await.expect("clear the username");
    user.send_keys("   ").await.expect("type a blank username");
    pass.send_keys("x").await.expect("type a password");
    b.find("#save-credentials")
        .await
        .click()
        .await
        .expect("Save");
    let err = b.wait("#credentials-error", STEP).await;
    assert_eq!(
        err.attr("data-field").await.expect("attr").as_deref(),
        Some("username"),
        "{}",
        err.text().await.unwrap_or_default()
    );
    b.shot("06-credentials-refused").await;
    let new_password = "Correct-Horse-7431";
    let user = b.find("#username").await;
    user.clear().await.expect("clear the username");
    user.send_keys("backup2").await.expect("type the username");
    b.find("#password")
        .await
        .send_keys(new_password)
        .await
        .expect("type the password");
    b.find("#save-credentials")
        .await
        .click()
        .await
        .expect("Save");
    b.wait_for_location("the device page after saving", |u| {
        u.path() == format!("/devices/{}", locked.id) && u.query_pairs().any(|(k, _)| k == "done")
    })
    .await;
    let flash = b.wait("#flash", STEP).await.text().await.expect("flash");
    assert!(flash.contains("credentials saved"), "flash: {flash:?}");
    let source = b.c.source().await.expect("page source");
    assert!(
        !source.contains(new_password),
        "the device page shows the new password"
    );
    let stored = fleet
        .store()
        .device(locked.id)
        .await
        .expect("device")
        .expect("still there");
    assert_eq!(stored.username, "backup2");
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT password_enc FROM devices WHERE id = $1")
        .bind(locked.id)
        .fetch_one(fleet.store().pool())
        .await
        .expect("sealed password");
    assert_eq!(
        fleet.key.open(&locked.id, &sealed).expect("opens").expose(),
        new_password,
        "the form stored the new password"
    );
    b.shot("07-credentials-saved").await;

    // ---- a jump host through the device page's form ----------------------------------
    let behind = devices
        .iter()
        .filter(|d| d.fault.is_none())
        .nth(1)
        .expect("a second healthy device");
    let tenant = fleet
        .store()
        .device(behind.id)
        .await
        .expect("device")
        .expect("there")
        .tenant_id;
    let bastion_pw = "Bastion-Secret-Pw-9";
    b.goto(&format!("/devices/{}", behind.id)).await;
    b.wait("#jump-host-form", STEP).await;
    assert!(
        b.c.find(Locator::Css("#jump-host-form input[name='csrf']"))
            .await
            .is_ok(),
        "the jump host form carries the CSRF token"
    );
    let pw = b.find("#jump-password").await;
    assert_eq!(
        pw.attr("type").await.expect("type").as_deref(),
        Some("password")
    );
    b.find("#jump-host")
        .await
        .send_keys("ops@bastion.invalid:2222")
        .await
        .expect("type the jump host");
    pw.send_keys(bastion_pw).await.expect("type its password");
    b.find("#save-jump-host")
        .await
        .click()
        .await
        .expect("Save jump host");
    b.wait_for_location("the device page after saving the jump host", |u| {
        u.path() == format!("/devices/{}", behind.id) && u.query_pairs().any(|(k, _)| k == "done")
    })
    .await;
    let flash = b.wait("#flash", STEP).await.text().await.expect("flash");
    assert!(
        flash.contains("via bastion ops@bastion.invalid:2222 (its own)"),
        "flash: {flash:?}"
    );
    let via = b.text("#via-bastion").await;
    assert!(
        via.contains("ops@bastion.invalid:2222") && via.contains("its own"),
        "{via:?}"
    );
    assert!(
        b.text("#bastion-fingerprint")
            .await
            .contains("not pinned yet"),
        "no bastion key pinned yet"
    );
    assert_eq!(
        b.find("#jump-host")
            .await
            .prop("value")
            .await
            .expect("value")
            .as_deref(),
        Some("ops@bastion.invalid:2222"),
        "the form shows the device's own jump host"
    );
    assert_eq!(
        b.find("#jump-password")
            .await
            .prop("value")
            .await
            .expect("value")
            .as_deref(),
        Some(""),
        "the bastion password is write-only"
    );
    assert!(
        !b.c.source().await.expect("source").contains(bastion_pw),
        "the device page shows the bastion password"
    );
    let sealed: Vec<u8> = sqlx::query_scalar("SELECT jump_password_enc FROM devices WHERE id = $1")
        .bind(behind.id)
        .fetch_one(fleet.store().pool())
        .await
        .expect("sealed jump password");
    assert_eq!(
        fleet
            .key
            .open_jump_password(&behind.id, &sealed)
            .expect("opens")
            .expose(),
        bastion_pw,
        "the form stored the bastion password, sealed for the device"
    );
    b.shot("08-jump-host-saved").await;
    // A refused value comes back with the field named, nothing changed.
    let field = b.find("#jump-host").await;
    field.clear().await.expect("clear");
    field.send_keys("bastion:0").await.expect("type a bad port");
    b.find("#save-jump-host").await.click().await.expect("Save");
    let err = b
        .wait("#form-error", STEP)
        .await
        .text()
        .await
        .expect("error");
    assert!(err.contains("jump_host"), "error: {err:?}");
    assert!(
        b.text("#via-bastion")
            .await
            .contains("bastion.invalid:2222")
    );

    // The bastion's key changed: the device page shows the pin and leads to the reset.
    rosbackup::bastions::record_pin(
        fleet.store(),
        tenant,
        "bastion.invalid",
        2222,
        "SHA256:bastionPinnedBeforeItWasRebuiltAAAAAAAAAAAAA",
    )
    .await
    .expect("pin");
    rosbackup::bastions::record_mismatch(
        fleet.store(),
        tenant,
        "bastion.invalid",
        2222,
        "SHA256:bastionPresentedAfterItWasRebuiltBBBBBBBBBBB",
    )
    .await
    .expect("mismatch");
    sqlx::query(
        "UPDATE devices SET blocked_reason = 'bastion_host_key_mismatch', blocked_at = now(), \
         next_due_at = now() + interval '1 day' WHERE id = $1",
    )
    .bind(behind.id)
    .execute(fleet.store().pool())
    .await
    .expect("block behind the bastion");
    b.goto(&format!("/devices/{}", behind.id)).await;
    assert_eq!(
        b.wait("#bastion-fingerprint", STEP)
            .await
            .text()
            .await
            .expect("fp"),
        "SHA256:bastionPinnedBeforeItWasRebuiltAAAAAAAAAAAAA"
    );
    b.find("#fix-bastion-key")
        .await
        .click()
        .await
        .expect("open the bastion key page from the hint");
    b.wait_for_location("the bastion key page", |u| {
        u.path() == format!("/devices/{}/bastion-key", behind.id)
    })
    .await;
    assert_eq!(
        b.text("#old-bastion-fingerprint").await,
        "SHA256:bastionPinnedBeforeItWasRebuiltAAAAAAAAAAAAA"
    );
    assert_eq!(
        b.text("#new-bastion-fingerprint").await,
        "SHA256:bastionPresentedAfterItWasRebuiltBBBBBBBBBBB"
    );
    b.shot("09-bastion-key").await;
    b.find("#reset-bastion-key")
        .await
        .click()
        .await
        .expect("Reset bastion key");
    b.c.accept_alert().await.expect("confirm the reset");
    b.wait_for_location("the device page after the bastion reset", |u| {
        u.path() == format!("/devices/{}", behind.id) && u.query_pairs().any(|(k, _)| k == "done")
    })
    .await;
    let flash = b.wait("#flash", STEP).await.text().await.expect("flash");
    assert!(
        flash.contains("pinned key forgotten; 1 device(s) unblocked"),
        "flash: {flash:?}"
    );
    let pinned = rosbackup::bastions::pin(fleet.store(), tenant, "bastion.invalid", 2222)
        .await
        .expect("pin");
    assert_eq!(pinned, None, "the pin is forgotten");
    // And cleared again through the form: none of its own, so direct here.
    let field = b.wait("#jump-host", STEP).await;
    field.clear().await.expect("clear");
    b.find("#save-jump-host").await.click().await.expect("Save");
    // The page before had a flash too (the reset's): wait for this save's redirect.
    b.wait_for_location("the device page after clearing the jump host", |u| {
        u.query_pairs()
            .any(|(k, v)| k == "done" && v.contains("jump host"))
    })
    .await;
    let flash = b.wait("#flash", STEP).await.text().await.expect("flash");
    assert!(flash.contains("jump host none"), "flash: {flash:?}");
    assert!(
        b.c.find(Locator::Css("#via-bastion")).await.is_err(),
        "no bastion after clearing"
    );
    let stored = fleet
        .store()
        .device(behind.id)
        .await
        .expect("device")
        .expect("there");
    assert_eq!((stored.jump_host, stored.jump_direct), (None, false));

    // The tenant's default on the jump hosts page: the device inherits it.
    let tenant_pw = "Tenant-Bastion-Secret-4";
    b.find("#nav-jump-hosts")
        .await
        .click()
        .await
        .expect("open Jump hosts");
    b.wait_for_location("the jump hosts page", |u| u.path() == "/jump-hosts")
        .await;
    b.wait(&format!("#tenant-{tenant}-host"), STEP)
        .await
        .send_keys("jump.tenant.invalid")
        .await
        .expect("type the tenant's jump host");
    b.find(&format!("#tenant-{tenant}-password"))
        .await
        .send_keys(tenant_pw)
        .await
        .expect("type its password");
    b.find(&format!("#save-tenant-{tenant}"))
        .await
        .click()
        .await
        .expect("Save tenant default");
    let flash = b.wait("#flash", STEP).await.text().await.expect("flash");
    assert!(
        flash.contains("default jump host jump.tenant.invalid:22"),
        "flash: {flash:?}"
    );
    assert!(
        !b.c.source().await.expect("source").contains(tenant_pw),
        "the jump hosts page shows the tenant's bastion password"
    );
    b.shot("10-jump-hosts").await;
    b.goto(&format!("/devices/{}", behind.id)).await;
    let via = b
        .wait("#via-bastion", STEP)
        .await
        .text()
        .await
        .expect("via");
    assert!(
        via.contains("jump.tenant.invalid:22") && via.contains("its tenant's default"),
        "{via:?}"
    );
    // Cleared again, so no other device of the tenant goes through it.
    b.goto("/jump-hosts").await;
    b.wait(&format!("#tenant-{tenant}-host"), STEP)
        .await
        .clear()
        .await
        .expect("clear");
    b.find(&format!("#save-tenant-{tenant}"))
        .await
        .click()
        .await
        .expect("Save tenant default");
    let flash = b.wait("#flash", STEP).await.text().await.expect("flash");
    assert!(flash.contains("default jump host none"), "flash: {flash:?}");
    assert_eq!(
        rosbackup::bastions::tenant_default(fleet.store(), tenant)
            .await
            .expect("tenant default"),
        None
    );

    // ---- jobs ------------------------------------------------------------------------
    b.find("header.top nav a[href='/jobs']")
        .await
        .click()
        .await
        .expect("open Jobs");
    b.wait("table#jobs", STEP).await;
    assert_eq!(b.text("h1").await, "Jobs");
    // Device, trigger and due time first; the job id after; no apalis attempt counter.
    let heads: Vec<String> = {
        let mut out = Vec::new();
        for th in
            b.c.find_all(Locator::Css("#jobs thead th"))
                .await
                .expect("th")
        {
            out.push(th.text().await.expect("th text"));
        }
        out
    };
    assert_eq!(heads[..3], ["Device", "Trigger", "Due"], "{heads:?}");
    assert!(heads.contains(&"Job id".to_string()), "{heads:?}");
    assert!(
        !b.body_text().await.contains("Attempts"),
        "the jobs page shows apalis' attempt counter"
    );
    assert!(
        b.text("#retry-policy")
            .await
            .contains("5 min, 15 min, then every 1 h"),
        "the jobs page states the retry policy"
    );
    b.find("#tab-dead")
        .await
        .click()
        .await
        .expect("open the Dead tab");
    b.wait_for_location("the dead jobs tab", |u| u.query() == Some("state=dead"))
        .await;
    b.wait("table#jobs", STEP).await;
    let (_, dead) = fleet
        .queue
        .jobs(JobListState::Dead, None, 0, 50)
        .await
        .expect("dead jobs");
    assert_eq!(
        b.text(".page-head .muted").await,
        format!("{dead} dead"),
        "the dead jobs tab counts like the queue does"
    );
    assert!(
        b.text("#tab-dead").await.ends_with(&dead.to_string()),
        "the Dead tab shows its count"
    );
    let rows =
        b.c.find_all(Locator::Css("#jobs tbody tr[data-job]"))
            .await
            .expect("job rows");
    assert_eq!(rows.len() as u64, dead.min(50));
    b.shot("11-jobs").await;

    // ---- logout ----------------------------------------------------------------------
    b.find("#logout").await.click().await.expect("Log out");
    b.wait("#token", STEP).await;
    assert_eq!(
        b.path_and_query().await,
        "/login?signed_out=1",
        "logout lands on login"
    );
    assert_eq!(b.text("#signed-out").await, "You have been signed out.");
    b.shot("12-logged-out").await;
    b.goto("/devices").await;
    let at = b
        .wait_for_location("the redirect to the login page", |u| u.path() == "/login")
        .await;
    assert_eq!(at.query(), Some("next=/devices"));
    b.wait("#token", STEP).await;
    assert!(
        b.c.find(Locator::Css("#devices")).await.is_err(),
        "no device list after logout"
    );

    let errors: Vec<_> = b
        .console
        .iter()
        .filter(|(_, level, message)| {
            // The dashboard serves no favicon; Chromium asks for one on every page.
            level == "SEVERE" && !message.contains("/favicon.ico")
        })
        .collect();
    assert!(
        errors.is_empty(),
        "the browser console logged errors: {errors:#?}"
    );
}
