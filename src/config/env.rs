//! Environment overrides. Secrets and the database URL belong in the environment (or in files
//! the environment points to), never in a `proxy.toml` that gets committed.
//!
//! | variable | overrides |
//! |---|---|
//! | `GATE_LISTEN` | `server.listen` |
//! | `GATE_ENVIRONMENT` | `server.environment` |
//! | `GATE_DATA_DIR` | `server.data_dir` |
//! | `GATE_WORKERS` | `server.workers` |
//! | `GATE_UPSTREAM_URL` | `upstream.url` |
//! | `GATE_DATABASE_URL` (or `GATE_DATABASE_URL_FILE`) | `database.url` |
//! | `GATE_JWT_SECRET` (or `_FILE`) | the secret that signs the gate's tokens |
//! | `GATE_BACKEND_JWT_SECRET` (or `_FILE`) | the backend's `JWT_SECRET_KEY` |
//! | `GATE_API_KEY_PEPPER` (or `_FILE`) | the key of the API-key hash |
//! | `GATE_SMTP_PASSWORD` (or `_FILE`) | `[smtp]`'s password |
//! | `GATE_ALIPAY_PRIVATE_KEY` (or `_FILE`) | the Alipay app private key |
//! | `GATE_WECHAT_PRIVATE_KEY` (or `_FILE`) | the WeChat Pay merchant API private key |
//! | `GATE_WECHAT_API_V3_KEY` (or `_FILE`) | the WeChat Pay APIv3 key |

use std::collections::HashMap;

use super::ConfigError;
use super::schema::{Environment, FileConfig};

/// A snapshot of the variables that matter, so tests can validate without touching the process.
pub struct Env {
    vars: HashMap<String, String>,
}

const NAMES: &[&str] = &[
    "GATE_LISTEN",
    "GATE_ENVIRONMENT",
    "GATE_DATA_DIR",
    "GATE_WORKERS",
    "GATE_UPSTREAM_URL",
    "GATE_DATABASE_URL",
    "GATE_DATABASE_URL_FILE",
    "GATE_JWT_SECRET",
    "GATE_JWT_SECRET_FILE",
    "GATE_BACKEND_JWT_SECRET",
    "GATE_BACKEND_JWT_SECRET_FILE",
    "GATE_API_KEY_PEPPER",
    "GATE_API_KEY_PEPPER_FILE",
    "GATE_SMTP_PASSWORD",
    "GATE_SMTP_PASSWORD_FILE",
    "GATE_ALIPAY_PRIVATE_KEY",
    "GATE_ALIPAY_PRIVATE_KEY_FILE",
    "GATE_WECHAT_PRIVATE_KEY",
    "GATE_WECHAT_PRIVATE_KEY_FILE",
    "GATE_WECHAT_API_V3_KEY",
    "GATE_WECHAT_API_V3_KEY_FILE",
];

/// Secrets taken from the environment (they have no place in `proxy.toml`).
#[derive(Default)]
pub struct Secrets {
    pub jwt_secret: Option<String>,
    pub backend_jwt_secret: Option<String>,
    pub api_key_pepper: Option<String>,
    pub smtp_password: Option<String>,
    pub alipay_private_key: Option<String>,
    pub wechat_private_key: Option<String>,
    pub wechat_api_v3_key: Option<String>,
}

impl Env {
    pub fn process() -> Env {
        let vars = NAMES
            .iter()
            .filter_map(|n| std::env::var(n).ok().map(|v| (n.to_string(), v)))
            .collect();
        Env { vars }
    }

    pub fn empty() -> Env {
        Env {
            vars: HashMap::new(),
        }
    }

    /// An environment made of the given pairs (for tests and tools).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Env {
        Env {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub fn secrets(&self) -> Result<Secrets, ConfigError> {
        Ok(Secrets {
            jwt_secret: self.secret("GATE_JWT_SECRET")?,
            backend_jwt_secret: self.secret("GATE_BACKEND_JWT_SECRET")?,
            api_key_pepper: self.secret("GATE_API_KEY_PEPPER")?,
            smtp_password: self.secret("GATE_SMTP_PASSWORD")?,
            alipay_private_key: self.secret("GATE_ALIPAY_PRIVATE_KEY")?,
            wechat_private_key: self.secret("GATE_WECHAT_PRIVATE_KEY")?,
            wechat_api_v3_key: self.secret("GATE_WECHAT_API_V3_KEY")?,
        })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }

    /// `NAME`, or the trimmed contents of the file named by `NAME_FILE`.
    fn secret(&self, name: &str) -> Result<Option<String>, ConfigError> {
        if let Some(v) = self.get(name) {
            return Ok(Some(v.to_string()));
        }
        let file_var = format!("{name}_FILE");
        match self.get(&file_var) {
            Some(path) => std::fs::read_to_string(path)
                .map(|s| Some(s.trim().to_string()))
                .map_err(|e| ConfigError::one(format!("{file_var}: cannot read {path}: {e}"))),
            None => Ok(None),
        }
    }

    pub fn apply(&self, file: &mut FileConfig) -> Result<(), ConfigError> {
        if let Some(v) = self.get("GATE_LISTEN") {
            file.server.listen = v.parse().map_err(|_| {
                ConfigError::one(format!(
                    "GATE_LISTEN: `{v}` is not an address such as 0.0.0.0:9000"
                ))
            })?;
        }
        if let Some(v) = self.get("GATE_ENVIRONMENT") {
            file.server.environment = match v {
                "development" => Environment::Development,
                "production" => Environment::Production,
                _ => {
                    return Err(ConfigError::one(format!(
                        "GATE_ENVIRONMENT: `{v}` is neither `development` nor `production`"
                    )));
                }
            };
        }
        if let Some(v) = self.get("GATE_DATA_DIR") {
            file.server.data_dir = v.to_string();
        }
        if let Some(v) = self.get("GATE_WORKERS") {
            file.server.workers = v.parse().map_err(|_| {
                ConfigError::one(format!(
                    "GATE_WORKERS: `{v}` is not a number of threads (0: one per core)"
                ))
            })?;
        }
        if let Some(v) = self.get("GATE_UPSTREAM_URL") {
            file.upstream.url = v.to_string();
        }
        if let Some(v) = self.secret("GATE_DATABASE_URL")? {
            file.database.url = Some(v);
        }
        Ok(())
    }
}
