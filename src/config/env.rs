//! Environment overrides. Secrets and the database URL belong in the environment (or in files
//! the environment points to), never in a `proxy.toml` that gets committed.
//!
//! | variable | overrides |
//! |---|---|
//! | `GATE_LISTEN` | `server.listen` |
//! | `GATE_ENVIRONMENT` | `server.environment` |
//! | `GATE_DATA_DIR` | `server.data_dir` |
//! | `GATE_UPSTREAM_URL` | `upstream.url` |
//! | `GATE_DATABASE_URL` (or `GATE_DATABASE_URL_FILE`) | `database.url` |

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
    "GATE_UPSTREAM_URL",
    "GATE_DATABASE_URL",
    "GATE_DATABASE_URL_FILE",
];

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
        if let Some(v) = self.get("GATE_UPSTREAM_URL") {
            file.upstream.url = v.to_string();
        }
        if let Some(v) = self.secret("GATE_DATABASE_URL")? {
            file.database.url = Some(v);
        }
        Ok(())
    }
}
