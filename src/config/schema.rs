//! The `proxy.toml` file as it is written: every table and key an operator may set.
//!
//! Unknown keys are refused (`deny_unknown_fields`) so a typo never silently falls back to a
//! default. Values that parse but make no sense (a zero timeout, a route that is metered and
//! blocked) are refused later by `validate`, which knows the line of each route.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use toml::Spanned;

use super::size::ByteSize;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub upstream: UpstreamSection,
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub cors: CorsSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub payments: PaymentsSection,
    /// Outgoing mail for verification codes; absent means codes go to the log (development).
    #[serde(default)]
    pub smtp: Option<SmtpSection>,
    /// Quota types that metered routes may charge (`[[quota_type]]`).
    #[serde(default, rename = "quota_type")]
    pub quota_types: Vec<Spanned<QuotaTypeSection>>,
    /// The plans seeded at start-up (`[[plan]]`).
    #[serde(default, rename = "plan")]
    pub plans: Vec<Spanned<PlanSection>>,
    /// The route table (`[[route]]`), in any order: matching is by specificity, not order.
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RouteSection>>,
    /// Directories of built frontends served at a path (`[[static]]`).
    #[serde(default, rename = "static")]
    pub statics: Vec<Spanned<super::mounts::StaticSection>>,
    #[serde(default)]
    pub tenancy: super::tenancy::TenancySection,
    #[serde(default)]
    pub tasks: super::tasks::TasksSection,
}

/// `[server]`: the public listener and the gate's own limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub environment: Environment,
    #[serde(default = "default_data_dir")]
    pub data_dir: String,
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_secs: u64,
    /// The longest pause between two reads of a request body (nginx's `client_body_timeout`).
    #[serde(default = "default_client_body_timeout")]
    pub client_body_timeout_secs: u64,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Threads that serve connections, each with its own event loop; 0: one per core.
    #[serde(default)]
    pub workers: usize,
    /// A worker that accepts a connection while another live worker holds fewer hands it
    /// over (`server::balance`); off: each keeps what it accepts.
    #[serde(default = "default_true")]
    pub balance: bool,
    #[serde(default)]
    pub unknown_routes: DefaultAccess,
    #[serde(default)]
    pub trusted_proxies: Vec<IpAddr>,
    /// The platform layout: the gate's own endpoints also under this prefix (`/api/auth/login`).
    #[serde(default)]
    pub api_prefix: Option<String>,
    /// The platform layout: backend paths under this prefix, forwarded with it removed
    /// (`/api/ctai/process/...` -> `/process/...`).
    #[serde(default)]
    pub backend_prefix: Option<String>,
    /// `[server.tls]`: terminate TLS (HTTP/2 by ALPN). Reloaded with the configuration.
    #[serde(default)]
    pub tls: Option<TlsSection>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM: the certificate chain, leaf first.
    pub cert_file: String,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: default_listen(),
            environment: Environment::default(),
            data_dir: default_data_dir(),
            max_body: default_max_body(),
            timeout_secs: default_timeout(),
            header_read_timeout_secs: default_header_read_timeout(),
            client_body_timeout_secs: default_client_body_timeout(),
            shutdown_grace_secs: default_shutdown_grace(),
            workers: 0,
            balance: true,
            unknown_routes: DefaultAccess::default(),
            trusted_proxies: Vec::new(),
            api_prefix: None,
            backend_prefix: None,
            tls: None,
        }
    }
}

/// `[upstream]`: the iDoctor backend.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    #[serde(default = "default_upstream")]
    pub url: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    #[serde(default = "default_pool_idle")]
    pub pool_idle_timeout_secs: u64,
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_host: usize,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            url: default_upstream(),
            connect_timeout_secs: default_connect_timeout(),
            pool_idle_timeout_secs: default_pool_idle(),
            pool_max_idle_per_host: default_pool_max_idle(),
        }
    }
}

/// `[database]`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// `sqlite://path` or `postgres://...`; empty means `<data_dir>/gate.db`.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub max_connections: Option<u32>,
}

/// `[cors]`: browsers on these origins may call the gate with credentials.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsSection {
    #[serde(default)]
    pub allow_origins: Vec<String>,
    #[serde(default = "default_true")]
    pub allow_credentials: bool,
    #[serde(default = "default_cors_max_age")]
    pub max_age_secs: u64,
}

impl Default for CorsSection {
    fn default() -> Self {
        CorsSection {
            allow_origins: Vec::new(),
            allow_credentials: true,
            max_age_secs: default_cors_max_age(),
        }
    }
}

/// `[auth]`: tokens, verification and login throttling. Secrets are not here: they come from
/// the environment (`GATE_JWT_SECRET`, `GATE_BACKEND_JWT_SECRET`, `GATE_API_KEY_PEPPER`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(default = "default_access_minutes")]
    pub access_token_minutes: u64,
    #[serde(default = "default_refresh_days")]
    pub refresh_token_days: u64,
    #[serde(default = "default_reuse_grace")]
    pub refresh_reuse_grace_secs: u64,
    #[serde(default)]
    pub require_email_verification: bool,
    #[serde(default = "default_code_minutes")]
    pub verification_code_minutes: u64,
    #[serde(default = "default_code_attempts")]
    pub verification_code_attempts: u32,
    #[serde(default = "default_login_failures")]
    pub login_max_failures: u32,
    #[serde(default = "default_login_failures_ip")]
    pub login_max_failures_per_ip: u32,
    #[serde(default = "default_login_window")]
    pub login_window_secs: u64,
    /// Failed logins one account allows at once from all addresses together, and then one
    /// per `login_account_interval_secs` (slowed, never locked).
    #[serde(default = "default_account_burst")]
    pub login_account_burst: u32,
    #[serde(default = "default_account_interval")]
    pub login_account_interval_secs: u64,
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_secs: u64,
    /// During a database outage, principals known before it are served on unmetered routes
    /// for this long (a CDN's stale-if-error); 0 turns it off.
    #[serde(default = "default_stale_if_error")]
    pub stale_if_error_secs: u64,
    #[serde(default = "default_backend_jwt_secs")]
    pub backend_jwt_secs: u64,
    /// A login or refresh through the gate also sets an `HttpOnly` cookie with a short-lived
    /// image credential, accepted only on GET routes marked `query_token` (what `<img>` tags
    /// cannot authenticate otherwise).
    #[serde(default = "yes")]
    pub image_cookie: bool,
    /// Mark that cookie `Secure` even when the gate itself is reached over plain HTTP (TLS
    /// ends at a proxy in front of it). Over the gate's own TLS it always is.
    #[serde(default)]
    pub image_cookie_secure: bool,
}

fn yes() -> bool {
    true
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            access_token_minutes: default_access_minutes(),
            refresh_token_days: default_refresh_days(),
            refresh_reuse_grace_secs: default_reuse_grace(),
            require_email_verification: false,
            verification_code_minutes: default_code_minutes(),
            verification_code_attempts: default_code_attempts(),
            login_max_failures: default_login_failures(),
            login_max_failures_per_ip: default_login_failures_ip(),
            login_window_secs: default_login_window(),
            login_account_burst: default_account_burst(),
            login_account_interval_secs: default_account_interval(),
            cache_ttl_secs: default_cache_ttl(),
            stale_if_error_secs: default_stale_if_error(),
            backend_jwt_secs: default_backend_jwt_secs(),
            image_cookie: true,
            image_cookie_secure: false,
        }
    }
}

/// `[payments]`: providers and the order life cycle.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsSection {
    /// The sandbox provider: a checkout page on the gate that completes payments through the
    /// same signed-webhook path as the real providers. Default: on in development only.
    #[serde(default)]
    pub sandbox: Option<bool>,
    /// How clients and providers reach this gate (checkout pages, notify URLs).
    #[serde(default = "default_public_url")]
    pub public_url: String,
    /// An unpaid order is closed after this long.
    #[serde(default = "default_order_ttl")]
    pub order_ttl_minutes: u64,
    /// How often pending orders are reconciled with their provider.
    #[serde(default = "default_reconcile")]
    pub reconcile_interval_secs: u64,
    /// Orders pending longer than this are queried at the provider.
    #[serde(default = "default_reconcile_after")]
    pub reconcile_after_secs: u64,
    /// A partial refund takes back its share of the time the order bought (refunded / paid of
    /// its span). Off: only a full refund shortens the subscription.
    #[serde(default)]
    pub partial_refund_shortens: bool,
    /// `[payments.alipay]`: Alipay OpenAPI (RSA2, public-key mode).
    #[serde(default)]
    pub alipay: Option<AlipaySection>,
    /// `[payments.wechat]`: WeChat Pay API v3 (Native QR codes).
    #[serde(default)]
    pub wechat: Option<WechatSection>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct WechatSection {
    pub mchid: String,
    pub appid: String,
    #[serde(default = "default_wechat_base")]
    pub api_base: String,
    /// The serial number of the merchant API certificate (uppercase hex).
    pub merchant_serial_no: String,
    /// The merchant API private key (apiclient_key.pem) as a file; or GATE_WECHAT_PRIVATE_KEY(_FILE).
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// Public-key mode: the WeChat Pay public key ID (PUB_KEY_ID_...) and key (PEM or file).
    #[serde(default)]
    pub public_key_id: Option<String>,
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub public_key_file: Option<String>,
    /// Platform-certificate mode: PEM files of the platform certificates (chosen by serial).
    #[serde(default)]
    pub platform_certificates: Vec<String>,
    /// Default: <public_url>/webhooks/wechat.
    #[serde(default)]
    pub notify_url: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AlipaySection {
    /// The 16-digit APPID.
    pub app_id: String,
    #[serde(default = "default_alipay_gateway")]
    pub gateway: String,
    /// The Alipay public key (支付宝公钥), PEM or bare base64, inline or as a file.
    #[serde(default)]
    pub alipay_public_key: Option<String>,
    #[serde(default)]
    pub alipay_public_key_file: Option<String>,
    /// The app private key as a file; or GATE_ALIPAY_PRIVATE_KEY(_FILE) in the environment.
    #[serde(default)]
    pub private_key_file: Option<String>,
    /// Certificate mode (公钥证书模式), instead of alipay_public_key: the app public-key
    /// certificate (appCertPublicKey_<APPID>.crt), the Alipay public-key certificate
    /// (alipayCertPublicKey_RSA2.crt) and Alipay's root bundle (alipayRootCert.crt).
    #[serde(default)]
    pub app_cert_file: Option<String>,
    #[serde(default)]
    pub alipay_cert_file: Option<String>,
    #[serde(default)]
    pub alipay_root_cert_file: Option<String>,
    /// Checked against notifications when set (seller_id).
    #[serde(default)]
    pub seller_id: Option<String>,
    /// "precreate" (a QR payload, the default), "page" (PC redirect URL) or "wap" (mobile).
    #[serde(default = "default_alipay_checkout")]
    pub checkout: String,
    #[serde(default)]
    pub return_url: Option<String>,
    /// Where a payer who leaves the mobile (wap) checkout is sent; Alipay requires it for
    /// `alipay.trade.wap.pay`. Default: <public_url>/portal/payments.
    #[serde(default)]
    pub quit_url: Option<String>,
    /// Default: <public_url>/webhooks/alipay.
    #[serde(default)]
    pub notify_url: Option<String>,
}

impl Default for PaymentsSection {
    fn default() -> Self {
        PaymentsSection {
            sandbox: None,
            public_url: default_public_url(),
            order_ttl_minutes: default_order_ttl(),
            reconcile_interval_secs: default_reconcile(),
            reconcile_after_secs: default_reconcile_after(),
            partial_refund_shortens: false,
            alipay: None,
            wechat: None,
        }
    }
}

/// `[smtp]`: where verification mails go. The password comes from `GATE_SMTP_PASSWORD`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SmtpSection {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub username: Option<String>,
    /// "starttls" (port 587), "tls" (port 465, QQ mail) or "none" (a local relay).
    #[serde(default = "default_smtp_security")]
    pub security: String,
    pub from_email: String,
    #[serde(default = "default_from_name")]
    pub from_name: String,
}

/// `[[quota_type]]`: a countable resource plans grant and routes charge.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct QuotaTypeSection {
    pub key: String,
    pub name: String,
    pub unit: String,
}

/// `[[plan]]`: a plan created at start-up when no plan of that name exists yet (afterwards
/// the database, edited through the plans API, is the source of truth).
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct PlanSection {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// A decimal string such as "99.00" (or an integer); never a float.
    pub price: toml::Value,
    #[serde(default = "default_currency")]
    pub currency: String,
    #[serde(default = "default_cycle")]
    pub billing_cycle: String,
    /// The plan every new user starts on (exactly one).
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub features: toml::Table,
    /// Quota type -> limit per period: an integer, or "unlimited".
    #[serde(default)]
    pub quotas: toml::Table,
}

/// `[[route]]`: one path template of the backend and how the gate treats it.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub path: String,
    #[serde(default)]
    pub methods: Vec<String>,
    pub access: Access,
    #[serde(default)]
    pub query_token: bool,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub max_body: Option<ByteSize>,
    #[serde(default)]
    pub meter: Option<MeterSection>,
    /// The reply hands out a new id owned by the caller (`config::tenancy`).
    #[serde(default)]
    pub creates: Option<super::tenancy::Creates>,
    /// A path parameter names an owned id: only its owner passes.
    #[serde(default)]
    pub owner_only: Option<super::tenancy::OwnerOnlySection>,
    /// The reply lists owned ids: filtered to the caller's.
    #[serde(default)]
    pub owned_list: Option<super::tenancy::OwnedList>,
    /// The reply's field lists patient folders: filtered to the caller's.
    #[serde(default)]
    pub patient_list: Option<String>,
    /// The body is multipart/form-data, checked as it streams.
    #[serde(default)]
    pub multipart: bool,
}

/// `[route.meter]`: what a request on the route costs and when the charge stands.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct MeterSection {
    pub quota: String,
    #[serde(default)]
    pub cost: Option<u64>,
    #[serde(default)]
    pub cost_per_mb: Option<u64>,
    #[serde(default)]
    pub settle: SettleSection,
}

/// `[route.meter.settle]`: the reply that commits the charge; anything else refunds it.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SettleSection {
    #[serde(default = "default_success_status")]
    pub status: Vec<String>,
    #[serde(default)]
    pub json_field: Option<String>,
    #[serde(default)]
    pub json_equals: Option<String>,
    #[serde(default)]
    pub json_absent: bool,
}

impl Default for SettleSection {
    fn default() -> Self {
        SettleSection {
            status: default_success_status(),
            json_field: None,
            json_equals: None,
            json_absent: false,
        }
    }
}

/// Who may call a route.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Anyone; credentials are not required (and are still stripped before forwarding).
    Public,
    /// Any signed-in, active user (JWT or API key).
    User,
    /// Superusers only.
    Admin,
    /// Never forwarded.
    Blocked,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::User => "user",
            Access::Admin => "admin",
            Access::Blocked => "blocked",
        }
    }
}

/// What happens to a path no `[[route]]` matches. `public` is deliberately not offered: an
/// unknown path must never be forwarded unauthenticated by accident.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAccess {
    #[default]
    Deny,
    User,
    Admin,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 9000))
}
fn default_data_dir() -> String {
    "./data".into()
}
fn default_max_body() -> ByteSize {
    ByteSize(500 * 1024 * 1024)
}
fn default_timeout() -> u64 {
    60
}
fn default_header_read_timeout() -> u64 {
    30
}
fn default_client_body_timeout() -> u64 {
    60
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_upstream() -> String {
    "http://127.0.0.1:4200".into()
}
fn default_connect_timeout() -> u64 {
    5
}
fn default_pool_idle() -> u64 {
    4
}
fn default_pool_max_idle() -> usize {
    64
}
fn default_true() -> bool {
    true
}
fn default_cors_max_age() -> u64 {
    600
}
fn default_success_status() -> Vec<String> {
    vec!["2xx".into()]
}
fn default_access_minutes() -> u64 {
    30
}
fn default_refresh_days() -> u64 {
    7
}
fn default_reuse_grace() -> u64 {
    10
}
fn default_code_minutes() -> u64 {
    10
}
fn default_code_attempts() -> u32 {
    5
}
fn default_login_failures() -> u32 {
    5
}
fn default_login_failures_ip() -> u32 {
    50
}
fn default_login_window() -> u64 {
    900
}
fn default_account_burst() -> u32 {
    20
}
fn default_account_interval() -> u64 {
    30
}
fn default_stale_if_error() -> u64 {
    300
}
fn default_cache_ttl() -> u64 {
    10
}
fn default_backend_jwt_secs() -> u64 {
    300
}
fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_security() -> String {
    "starttls".into()
}
fn default_from_name() -> String {
    "iDoctor".into()
}
fn default_currency() -> String {
    "CNY".into()
}
fn default_cycle() -> String {
    "monthly".into()
}
fn default_public_url() -> String {
    "http://localhost:9000".into()
}
fn default_order_ttl() -> u64 {
    30
}
fn default_reconcile() -> u64 {
    60
}
fn default_reconcile_after() -> u64 {
    300
}
fn default_alipay_gateway() -> String {
    "https://openapi.alipay.com/gateway.do".into()
}
fn default_alipay_checkout() -> String {
    "precreate".into()
}
fn default_wechat_base() -> String {
    "https://api.mch.weixin.qq.com".into()
}
