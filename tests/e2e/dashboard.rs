//! The dashboard (`GET /`) in a real browser: Debian's Chromium, headless,
//! driven through ChromeDriver's WebDriver API, during a live run of the
//! daily-signups example and its Python twin. The page must show the
//! gauges the handlers set, list every handler and sink, and fit a phone's
//! width; its screenshots are kept as test artifacts.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::examples::{DAILY_SIGNUPS, handlers_built, sandbox, with_url};
use crate::http::{Daemon, exchange, listening_on};
use crate::support::{Server, interrupt, root, temp_dir};

/// The daily-signups config's own handler, its Python twin beside it, and
/// the HTTP server on a free port.
const TWIN_AND_HTTP: &str = r#"
[[handlers]]
name = "daily-signups-py"
tenant = "growth"
module = "python/target/daily_signups.wasm"
tables = ["shop.user_info"]
ops = ["insert"]
sinks = ["signups"]
limits = { memory_mb = 32, time_ms = 50, emits_per_event = 1 }
on_error = "halt"

[http]
listen = "127.0.0.1:0"

[tenants.growth]
tables = ["shop.user_info"]
sinks = ["signups"]
breaker = { failures = 20, window_ms = 10000, cooldown_ms = 30000 }
"#;

/// Registrations after `examples/shop.sql`'s four (two on each of
/// 2025-11-21 and 2025-11-22): 3, 5 and 4 on the three days after, a day
/// at a time, so that the page's lines move.
const MORE_SIGNUPS: [&str; 3] = [
    "INSERT INTO shop.user_info VALUES
      (5, 'e@example.com', 'E', '192.0.2.5', '2025-11-23 08:00:00'),
      (6, 'f@example.com', 'F', '192.0.2.6', '2025-11-23 12:00:00'),
      (7, 'g@example.com', 'G', '192.0.2.7', '2025-11-23 18:00:00')",
    "INSERT INTO shop.user_info VALUES
      (8, 'h@example.com', 'H', '192.0.2.8', '2025-11-24 07:00:00'),
      (9, 'i@example.com', 'I', '192.0.2.9', '2025-11-24 09:00:00'),
      (10, 'j@example.com', 'J', '192.0.2.10', '2025-11-24 11:00:00'),
      (11, 'k@example.com', 'K', '192.0.2.11', '2025-11-24 13:00:00'),
      (12, 'l@example.com', 'L', '192.0.2.12', '2025-11-24 15:00:00')",
    "INSERT INTO shop.user_info VALUES
      (13, 'm@example.com', 'M', '192.0.2.13', '2025-11-25 08:00:00'),
      (14, 'n@example.com', 'N', '192.0.2.14', '2025-11-25 10:00:00'),
      (15, 'o@example.com', 'O', '192.0.2.15', '2025-11-25 12:00:00'),
      (16, 'p@example.com', 'P', '192.0.2.16', '2025-11-25 14:00:00')",
];

/// What every handler's gauges must read once all registrations are in.
const GAUGES: [(&str, f64); 6] = [
    ("signups_2025_11_21", 2.0),
    ("signups_2025_11_22", 2.0),
    ("signups_2025_11_23", 3.0),
    ("signups_2025_11_24", 5.0),
    ("signups_2025_11_25", 4.0),
    ("signups_latest_day", 4.0),
];

/// What the page shows, read in the browser.
const READ_PAGE: &str = r##"
const all = (s, from = document) => [...from.querySelectorAll(s)];
const bars = all(".bars .bar").map((b) => b.getBoundingClientRect().width);
return {
  connected: document.getElementById("source-connected").textContent,
  changes: document.getElementById("source-changes").textContent,
  rate: document.getElementById("source-rate").textContent,
  behind: document.getElementById("source-behind").textContent,
  position: document.getElementById("source-position").textContent,
  lineless: all("figure[data-series]").filter((f) => !f.querySelector("polyline")).length,
  handlers: all("#handlers tbody tr[data-handler]").map((r) => r.dataset.handler),
  sinks: all("#sinks tbody tr[data-sink]").map((r) => r.dataset.sink),
  tenants: all("#tenants tbody tr[data-tenant]").map((r) => all("th, td", r).map((c) => c.textContent)),
  series: all("section.handler-metrics").map((s) => [
    s.dataset.handler,
    all("figure[data-series]", s).map((f) => [f.dataset.series, Number(f.dataset.value)]),
  ]),
  widestBar: bars.length ? Math.max(...bars) : 0,
  overflow: document.documentElement.scrollWidth - window.innerWidth,
};
"##;

/// A WebDriver session of a headless Chromium, ended on drop.
struct Browser {
    driver: String,
    session: String,
    _chromedriver: Daemon,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let chromedriver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting chromedriver (apt-get install chromium chromium-driver): {e}"));
        let chromedriver = Daemon(Some(chromedriver));
        let driver = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&driver).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {driver}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--window-size=1280,1100",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let created = webdriver(&driver, "POST", "/session", Some(&caps));
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Browser {
            driver,
            session,
            _chromedriver: chromedriver,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let reply = webdriver(&self.driver, method, &format!("/session/{}{path}", self.session), body);
        assert!(reply["value"].get("error").is_none(), "{method} {path}: {reply}");
        reply["value"].clone()
    }

    fn script(&self, script: &str) -> Value {
        self.call("POST", "/execute/sync", Some(&json!({"script": script, "args": []})))
    }

    fn screenshot(&self, to: &Path) {
        let png = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .unwrap();
        std::fs::write(to, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = webdriver_raw(&self.driver, "DELETE", &format!("/session/{}", self.session), None);
    }
}

/// One WebDriver call: its JSON answer.
fn webdriver(driver: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let text = webdriver_raw(driver, method, path, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
}

fn webdriver_raw(driver: &str, method: &str, path: &str, body: Option<&Value>) -> std::io::Result<String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    Ok(exchange(driver, method, path, &[("Content-Type", "application/json")], &body)?.body)
}

/// Where a screenshot is kept: the test's artifact directory.
fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The page read until `done` holds (the page updates once a second).
fn page_until(browser: &Browser, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = browser.script(READ_PAGE);
        if done(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "the dashboard never showed {what}: {page:#}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn gauges_of<'a>(page: &'a Value, handler: &str) -> Vec<(&'a str, f64)> {
    let Some(section) = page["series"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s[0] == handler)
    else {
        return Vec::new();
    };
    section[1]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s[0].as_str()?.strip_prefix("gauge:")?, s[1].as_f64()?)))
        .collect()
}

#[test]
fn the_dashboard_draws_the_gauges_daily_signups_sets() {
    handlers_built();
    let server = Server::start(&[]);
    let (dir, config) = sandbox("dashboard", &DAILY_SIGNUPS, |text| {
        with_url(text, &server.url()) + TWIN_AND_HTTP
    });
    let log = dir.join("rowhook.log");
    let run = Command::new(env!("CARGO_BIN_EXE_rowhook"))
        .args(["run", "-c", config.to_str().unwrap()])
        .env("ROWHOOK_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("run rowhook");
    let mut run = Daemon(Some(run));
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(listening_on) {
            break addr;
        }
        assert!(
            run.0.as_mut().unwrap().try_wait().unwrap().is_none(),
            "rowhook exited:\n{text}"
        );
        assert!(Instant::now() < deadline, "no HTTP server within a minute:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let browser = Browser::start(&temp_dir("dashboard-chromium"));
    browser.call("POST", "/url", Some(&json!({"url": format!("http://{addr}/")})));
    server.sql_file(&root().join("examples/shop.sql"));
    for day in MORE_SIGNUPS {
        std::thread::sleep(Duration::from_millis(1500));
        server.sql(day);
    }
    let handlers = ["growth/daily-signups", "growth/daily-signups-py"];
    // The values, and a second reading after them: rates, a checkpoint,
    // a line in every card.
    let page = page_until(&browser, "both handlers' gauges at their last values", |page| {
        handlers.iter().all(|h| gauges_of(page, h) == GAUGES)
            && page["rate"] != "—"
            && page["behind"] == "0 B"
            && page["position"] != "—"
            && page["lineless"] == 0
    });
    assert_eq!(page["handlers"], json!(handlers), "{page:#}");
    assert_eq!(page["sinks"], json!(["signups"]), "{page:#}");
    // The tenant, its two handlers together, and its breaker.
    let tenants = &page["tenants"];
    assert_eq!(tenants.as_array().map(Vec::len), Some(1), "{page:#}");
    assert_eq!(tenants[0][0], "growth", "{page:#}");
    assert_eq!(tenants[0][1], "running", "{page:#}");
    assert_eq!(tenants[0][2], "2", "{page:#}");
    assert_eq!(tenants[0][5], "closed, 0 suspensions", "{page:#}");
    assert_eq!(page["connected"], "connected", "{page:#}");
    // 16 registrations: 16 changes of a subscribed table.
    assert_eq!(page["changes"], "16", "{page:#}");
    // The bars of the days are drawn to scale (the page's policy lets the
    // script size them).
    assert!(page["widestBar"].as_f64().unwrap() > 50.0, "{page:#}");
    assert!(page["overflow"].as_f64().unwrap() <= 0.0, "{page:#}");
    let wide = artifact("dashboard.png");
    browser.screenshot(&wide);

    // On a phone's width the page still fits: tables scroll in their box.
    browser.call("POST", "/window/rect", Some(&json!({"width": 390, "height": 1400})));
    page_until(&browser, "no sideways scrolling at 390 px", |page| {
        page["overflow"].as_f64().is_some_and(|o| o <= 0.0)
    });
    let phone = artifact("dashboard-phone.png");
    browser.screenshot(&phone);
    for png in [&wide, &phone] {
        let bytes = std::fs::read(png).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is no PNG", png.display());
        eprintln!("dashboard screenshot: {}", png.display());
    }
    drop(browser);
    assert!(interrupt(run.take()).success());
    let _ = std::fs::remove_dir_all(&dir);
}
