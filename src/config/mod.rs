//! Configuration: the `proxy.toml` schema, its defaults, environment overrides, and validation
//! with messages that name the key and the line.
//!
//! `load` is the only entry point: it reads the file, applies the environment, validates, and
//! returns a [`Config`] in which every value is already checked and converted (durations,
//! methods, the upstream authority), so the request path never parses configuration.

pub mod alipay_certs;
mod env;
pub mod mounts;
pub mod own_paths;
pub mod schema;
pub mod size;
pub mod tasks;
pub mod tenancy;
mod validate;

use crate::formats::ids::QuotaKey;
use http::Method;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use schema::{Access, DefaultAccess, Environment};
pub use tenancy::{RouteTenancy, Tenancy};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from, for messages.
    pub source: String,
    pub listen: SocketAddr,
    pub environment: Environment,
    pub data_dir: PathBuf,
    pub max_body: u64,
    pub timeout: Duration,
    pub header_read_timeout: Duration,
    /// The longest pause between two reads of a request body: 408 after it.
    pub client_body_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Threads that serve connections (`server.workers`, resolved: at least 1).
    pub workers: usize,
    /// Connections handed to the least-loaded live worker (`server.balance`).
    pub balance: bool,
    pub unknown_routes: DefaultAccess,
    pub trusted_proxies: Vec<IpAddr>,
    pub api_prefix: Option<String>,
    pub backend_prefix: Option<String>,
    /// (certificate chain PEM file, private key PEM file).
    pub tls: Option<(String, String)>,
    pub upstream: UpstreamConfig,
    pub database: DatabaseConfig,
    pub cors: CorsConfig,
    pub auth: AuthConfig,
    pub payments: PaymentsConfig,
    pub smtp: Option<SmtpConfig>,
    pub quota_types: Vec<QuotaType>,
    pub plans: Vec<PlanSpec>,
    pub routes: Vec<RouteSpec>,
    /// Directories served at paths (`[[static]]`), longest path first.
    pub mounts: Vec<mounts::Mount>,
    /// `[tenancy]`: how accounts are kept apart in the backend's global state.
    pub tenancy: Tenancy,
    /// `[tasks]`: charges that follow their tasks; `None` when no metered route creates one.
    pub tasks: Option<tasks::Tasks>,
}

/// A validated `[[plan]]`.
#[derive(Debug, Clone)]
pub struct PlanSpec {
    pub name: String,
    pub description: String,
    pub price_fen: i64,
    pub currency: String,
    pub billing_cycle: String,
    pub is_default: bool,
    /// A JSON object.
    pub features: String,
    /// Quota type -> limit (-1 = unlimited).
    pub quotas: Vec<(String, i64)>,
}

/// A secret value: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub require_email_verification: bool,
    pub code_ttl: Duration,
    pub code_attempts: u32,
    pub login_max_failures: u32,
    pub login_max_failures_per_ip: u32,
    pub login_window: Duration,
    pub login_account_burst: u32,
    pub login_account_interval: Duration,
    pub cache_ttl: Duration,
    /// How long principals known before a database outage are served through it.
    pub stale_if_error: Duration,
    pub backend_jwt_ttl: Duration,
    /// Set the image cookie on login and refresh (`auth.image_cookie`).
    pub image_cookie: bool,
    /// Mark it `Secure` also over plain HTTP (`auth.image_cookie_secure`).
    pub image_cookie_secure: bool,
    /// `GATE_JWT_SECRET`: signs the gate's tokens. Absent: generated in development.
    pub jwt_secret: Option<Secret>,
    /// `GATE_BACKEND_JWT_SECRET`: the backend's `JWT_SECRET_KEY`, to mint identity tokens for it.
    pub backend_jwt_secret: Option<Secret>,
    /// `GATE_API_KEY_PEPPER`: keys the hash under which API keys are stored.
    pub api_key_pepper: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct PaymentsConfig {
    pub sandbox: bool,
    /// Without a trailing slash.
    pub public_url: String,
    pub order_ttl: Duration,
    pub reconcile_interval: Duration,
    pub reconcile_after: Duration,
    /// A partial refund shortens the subscription by its share (`[payments]`).
    pub partial_refund_shortens: bool,
    pub alipay: Option<AlipayConfig>,
    pub wechat: Option<WechatConfig>,
}

#[derive(Debug, Clone)]
pub struct WechatConfig {
    pub mchid: String,
    pub appid: String,
    pub api_base: String,
    pub merchant_serial_no: String,
    pub private_key: Secret,
    /// The APIv3 key: 32 ASCII characters.
    pub api_v3_key: Secret,
    /// (PUB_KEY_ID_..., key text) in public-key mode.
    pub public_key: Option<(String, String)>,
    /// PEM texts of platform certificates.
    pub platform_certificates: Vec<String>,
    pub notify_url: String,
}

#[derive(Debug, Clone)]
pub struct AlipayConfig {
    pub app_id: String,
    pub gateway: String,
    /// PEM or base64 text of the Alipay public key.
    pub alipay_public_key: String,
    pub private_key: Secret,
    pub seller_id: Option<String>,
    /// precreate | page | wap
    pub checkout: String,
    pub return_url: Option<String>,
    /// Sent with `alipay.trade.wap.pay` (required there).
    pub quit_url: String,
    /// Certificate mode (公钥证书模式): the SNs requests carry and replies are checked by.
    /// `None` in public-key mode.
    pub cert_mode: Option<alipay_certs::AlipayCertMode>,
    pub notify_url: String,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub security: SmtpSecurity,
    pub from_email: String,
    pub from_name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    StartTls,
    Tls,
    None,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: String,
    pub authority: http::uri::Authority,
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub allow_origins: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_secs: u64,
}

#[derive(Debug, Clone)]
pub struct QuotaType {
    pub key: QuotaKey,
    pub name: String,
    pub unit: String,
}

impl Config {
    /// The `Path` of the image cookie: the first segment the image routes (`query_token`)
    /// share, so that the browser sends it with their requests only (`/get_image/...` and
    /// `/get_output_image/...` share none: `/`). Under the platform layout the same routes are
    /// also reached below `backend_prefix`, so it is `/` there too.
    pub fn image_cookie_path(&self) -> String {
        if self.backend_prefix.is_some() {
            return "/".into();
        }
        let mut firsts = self
            .routes
            .iter()
            .filter(|r| r.query_token)
            .map(|r| r.path.split('/').nth(1).unwrap_or(""));
        match firsts.next() {
            Some(first)
                if !first.is_empty() && !first.contains('{') && firsts.all(|f| f == first) =>
            {
                format!("/{first}/")
            }
            _ => "/".into(),
        }
    }
}

/// One validated `[[route]]`.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// The line of `[[route]]` in the file, for messages.
    pub line: usize,
    pub path: String,
    /// `None` means every method.
    pub methods: Option<Vec<Method>>,
    pub access: Access,
    pub query_token: bool,
    pub timeout: Duration,
    pub max_body: u64,
    pub meter: Option<Meter>,
    /// What isolation between accounts the route needs; `None` for most routes.
    pub tenancy: Option<std::sync::Arc<RouteTenancy>>,
}

/// What a metered route charges and when the charge stands.
#[derive(Debug, Clone)]
pub struct Meter {
    pub quota: QuotaKey,
    pub cost: Cost,
    pub settle: SettleRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// The same number of units per request.
    Fixed(u64),
    /// Units per started MiB of `Content-Length`, decided before the body is streamed.
    PerMb(u64),
}

/// A reply commits the charge when its status matches and, if set, the JSON predicate holds.
#[derive(Debug, Clone)]
pub struct SettleRule {
    pub status: Vec<StatusMatch>,
    pub json: Option<JsonPredicate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// A class such as `2xx` (the digit).
    Class(u16),
    Exact(u16),
}

impl StatusMatch {
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatch::Class(c) => status / 100 == c,
            StatusMatch::Exact(s) => status == s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonPredicate {
    /// The top-level field equals this string (`status == "submitted"`).
    Equals { field: String, value: String },
    /// The top-level field is absent (no `error` key).
    Absent { field: String },
}

/// A configuration that cannot be used, with one line per problem.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    pub fn one(msg: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![msg.into()],
        }
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, overrides from the environment, and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("{}: cannot read: {e}", path.display())))?;
        Self::from_toml(&text, &path.display().to_string(), &env::Env::process())
    }

    /// Parses and validates `text` (named `source` in messages) with the process environment.
    pub fn from_toml_str(text: &str, source: &str) -> Result<Config, ConfigError> {
        Self::from_toml(text, source, &env::Env::process())
    }

    /// Parses and validates `text` without looking at the environment (for tests and tools).
    pub fn from_toml_str_isolated(text: &str, source: &str) -> Result<Config, ConfigError> {
        Self::from_toml(text, source, &env::Env::empty())
    }

    fn from_toml(text: &str, source: &str, env: &env::Env) -> Result<Config, ConfigError> {
        let mut file: schema::FileConfig = toml::from_str(text)
            .map_err(|e| ConfigError::one(format!("{source}: {}", e.to_string().trim_end())))?;
        env.apply(&mut file)?;
        let secrets = env.secrets()?;
        validate::validate(file, text, source, secrets)
    }

    /// Parses and validates `text` with an environment made of `vars` only (for tests).
    pub fn from_toml_str_with_env(
        text: &str,
        source: &str,
        vars: &[(&str, &str)],
    ) -> Result<Config, ConfigError> {
        Self::from_toml(text, source, &env::Env::from_pairs(vars))
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }
}
