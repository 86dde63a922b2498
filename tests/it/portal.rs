//! The portal in a real browser: Debian's Chromium, headless, driven through chromedriver
//! (WebDriver), against a gate with the shipped `proxy.toml` and a backend stand-in. One
//! clinic's first day: `/` leads to the portal, sign up, create a key, a metered call with that
//! key, the bar and the chart show it, upgrade through the sandbox checkout (a QR code drawn by
//! the gate, the checkout page in a second window), the new limit shows, sign out. A screenshot
//! of each step is written under `target/portal-screenshots/`.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{Options, TestApp, spawn_app_with};

const QUOTA: &str = "api_calls_full_process";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The browser and its driver, or `None` (with a note) where this machine has neither; CI
/// must have both (.ci/run installs them).
async fn browser(profile: &Path) -> Option<(Driver, Client)> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let driver = ["/usr/bin/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must install chromium and chromium-driver (.ci/run does)"
        );
        eprintln!("skipped: no chromium or chromedriver on this machine (.ci/run installs them)");
        return None;
    };
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver { child, port };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1100,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a chromium session through chromedriver");
    Some((driver, client))
}

struct Portal<'a> {
    b: &'a Client,
    app: &'a TestApp,
    shots: PathBuf,
    step: u32,
}

impl Portal<'_> {
    async fn open(&self, view: &str) {
        self.b
            .goto(&self.app.url(&format!("/portal/#/{view}")))
            .await
            .unwrap();
        self.ready(view).await;
    }

    /// Waits until the page has drawn `view`.
    async fn ready(&self, view: &str) {
        self.find(&format!("main[data-ready=\"{view}\"]")).await;
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.b
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    async fn fill(&self, css: &str, text: &str) {
        self.find(css).await.send_keys(text).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    async fn attr(&self, css: &str, name: &str) -> String {
        self.find(css)
            .await
            .attr(name)
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// Waits until `css`'s attribute `name` reads `want`.
    async fn until_attr(&self, css: &str, name: &str, want: &str) {
        for _ in 0..200 {
            let got = self.find(css).await.attr(name).await.ok().flatten();
            if got.as_deref() == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} [{name}] never read {want:?}");
    }

    /// Waits until `css`'s text contains `want`.
    async fn until_text(&self, css: &str, want: &str) {
        let mut last = String::new();
        for _ in 0..200 {
            // The page redraws: an element found a moment ago may be gone; find it again.
            last = self.find(css).await.text().await.unwrap_or_default();
            if last.contains(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} never said {want:?}; last: {last:?}");
    }

    async fn shot(&mut self, name: &str) {
        self.step += 1;
        let png = self.b.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.step)), png).unwrap();
    }
}

#[tokio::test]
async fn a_clinic_signs_up_uses_a_key_upgrades_and_signs_out_in_a_real_browser() {
    let profile = tempfile::tempdir().unwrap();
    let Some((_driver, b)) = browser(profile.path()).await else {
        return;
    };
    // The checkout's address is built from `payments.public_url`: the gate's own, known ahead.
    let port = free_port();
    let app = spawn_app_with(Options {
        shipped: true,
        routes: String::new(),
        edits: vec![
            ("server.listen", format!("127.0.0.1:{port}").into()),
            (
                "payments.public_url",
                format!("http://127.0.0.1:{port}").into(),
            ),
        ],
        ..Options::default()
    })
    .await;
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/portal-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut p = Portal {
        b: &b,
        app: &app,
        shots,
        step: 0,
    };

    // `/` leads to the portal, which starts at the sign-in form (in Chinese).
    b.goto(&app.url("/")).await.unwrap();
    p.ready("login").await;
    assert!(
        b.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/portal/")
    );
    assert_eq!(
        p.find("#login-form button").await.text().await.unwrap(),
        "登录"
    );
    p.shot("sign-in").await;

    p.click("a[href=\"#/signup\"]").await;
    p.ready("signup").await;
    p.fill("#email", "clinic@example.com").await;
    p.fill("#username", "clinic").await;
    p.fill("#password", "password-clinic").await;
    p.click("#signup-form button[type=submit]").await;
    p.ready("overview").await;
    let bar = format!("#quota-{QUOTA}");
    assert_eq!(p.attr(&bar, "data-used").await, "0");
    assert_eq!(p.attr(&bar, "data-limit").await, "5", "the free plan");
    p.shot("overview-free").await;

    p.open("keys").await;
    p.fill("#key-form #name", "lab scripts").await;
    p.click("#key-form button[type=submit]").await;
    let key = p.find("#key-secret").await.text().await.unwrap();
    assert!(key.len() > 20, "{key}");
    p.find("tr[data-key]").await;
    p.shot("key-created").await;

    // A second key, deactivated, then deleted (after the page asks).
    p.fill("#key-form #name", "temporary").await;
    p.click("#key-form button[type=submit]").await;
    p.until_text("#keys tbody", "temporary").await;
    let temporary = "tr[data-name=\"temporary\"]";
    p.click(&format!("{temporary} button.secondary")).await;
    p.until_attr(temporary, "data-active", "false").await;
    p.click(&format!("{temporary} button.danger")).await;
    b.accept_alert().await.unwrap();
    for _ in 0..100 {
        if b.find_all(Locator::Css("tr[data-key]"))
            .await
            .unwrap()
            .len()
            == 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = b.find_all(Locator::Css("tr[data-key]")).await.unwrap();
    assert_eq!(left.len(), 1, "the deleted key is gone");
    assert!(left[0].text().await.unwrap().contains("lab scripts"));

    let call = app
        .with_key(&key)
        .post("/process/zhang/20250101")
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200, "{}", call.text().await.unwrap());

    p.open("overview").await;
    assert_eq!(
        p.attr(&bar, "data-used").await,
        "1",
        "the bar shows the call"
    );
    p.open("usage").await;
    assert_eq!(
        p.attr(&format!("#chart-{QUOTA}"), "data-total").await,
        "1",
        "the chart shows the call"
    );
    assert!(
        p.find("#usage-logs tbody tr")
            .await
            .text()
            .await
            .unwrap()
            .contains(QUOTA)
    );
    p.shot("usage").await;

    // Upgrade, paid with "Alipay": this gate has no Alipay credentials, so the sandbox stands in.
    p.open("plans").await;
    p.find("#payment_method")
        .await
        .select_by_value("alipay")
        .await
        .unwrap();
    p.click("[data-plan=\"专业版\"] button.choose").await;
    p.find("#qr svg").await;
    p.shot("checkout-qr").await;
    let portal_window = b.window().await.unwrap();
    p.click("#pay-link").await;
    let mut checkout = None;
    for _ in 0..100 {
        checkout = b
            .windows()
            .await
            .unwrap()
            .into_iter()
            .find(|w| *w != portal_window);
        if checkout.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.switch_to_window(checkout.expect("the checkout opens in a second window"))
        .await
        .unwrap();
    let page = p.find("h1").await.text().await.unwrap();
    assert!(
        page.contains("沙箱"),
        "the checkout says it is a sandbox: {page}"
    );
    p.click("form button").await;
    // The answer page, not the checkout's own heading: the payment is recorded.
    p.until_text("h1", "completed").await;
    b.close_window().await.unwrap();
    b.switch_to_window(portal_window).await.unwrap();
    p.until_attr("#pay-status", "data-paid", "yes").await;
    assert_eq!(
        p.attr(&format!("#new-quota #quota-{QUOTA}"), "data-limit")
            .await,
        "100",
        "the page shows the new quota once paid"
    );
    p.shot("paid").await;

    p.open("overview").await;
    assert_eq!(p.find("#plan-name").await.text().await.unwrap(), "专业版");
    assert_eq!(
        p.attr(&bar, "data-limit").await,
        "100",
        "the new limit shows"
    );
    p.shot("overview-pro").await;

    p.open("payments").await;
    assert!(
        p.find("#payments tbody tr")
            .await
            .text()
            .await
            .unwrap()
            .contains("completed")
    );

    // A new password: every session ends, the old password no longer works.
    p.open("account").await;
    p.fill("#current_password", "password-clinic").await;
    p.fill("#password-form #password", "clinic-new-password")
        .await;
    p.click("#password-form button[type=submit]").await;
    p.ready("login").await;
    p.fill("#username_or_email", "clinic").await;
    p.fill("#password", "clinic-new-password").await;
    p.click("#login-form button[type=submit]").await;
    p.ready("overview").await;
    p.open("payments").await;

    // English on a button, then sign out.
    p.click("#lang").await;
    p.ready("payments").await;
    assert_eq!(p.find("#logout").await.text().await.unwrap(), "Sign out");
    p.click("#logout").await;
    p.ready("login").await;
    assert!(p.find("#nav").await.attr("hidden").await.unwrap().is_some());
    p.shot("signed-out").await;

    // A wrong password: the page shows the gate's own words.
    app.admin_bearer().await;
    p.fill("#username_or_email", "root").await;
    p.fill("#password", "not-the-password").await;
    p.click("#login-form button[type=submit]").await;
    p.until_text("#toast", "wrong username/email or password")
        .await;

    // A superuser disables the clinic, grants it runs, and adds a plan.
    p.find("#password").await.clear().await.unwrap();
    p.fill("#password", "root-password").await;
    p.click("#login-form button[type=submit]").await;
    p.ready("overview").await;
    p.open("admin").await;
    p.click("tr[data-user=\"clinic\"] button.danger").await;
    p.until_attr("tr[data-user=\"clinic\"]", "data-active", "false")
        .await;
    let refused = app
        .with_key(&key)
        .post("/process/zhang/20250102")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403, "a disabled clinic's key stops");
    p.until_text("#audit tbody", "disable").await;
    p.fill("#plan-form #name", "Lab").await;
    p.fill("#plan-form #price", "19.90").await;
    p.click("#plan-form button[type=submit]").await;
    p.find("#admin-plans tr[data-plan=\"Lab\"]").await;
    let lab = app
        .get_json(&format!("/plans/{}", app.plan_id("Lab").await), 200)
        .await;
    assert_eq!(lab["price"], "19.90");
    p.shot("admin").await;

    // At a phone's width nothing runs off the side.
    b.set_window_size(390, 844).await.unwrap();
    for view in ["overview", "usage", "keys", "plans", "payments", "admin"] {
        p.open(view).await;
        let wide = b
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            wide.as_i64().unwrap() <= 0,
            "{view} scrolls sideways by {wide}px"
        );
    }
    p.shot("phone").await;

    b.close().await.unwrap();
    app.stop().await;
}
