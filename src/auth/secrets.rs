//! The gate's own secrets: the JWT signing secret and the API-key pepper.
//!
//! Production refuses to start without them (or with a known default such as the original's
//! `change-this-secret-key-in-production`). Development generates them once and keeps them in
//! the data folder, with a loud warning, so `cargo run` works on a fresh machine and tokens
//! survive a restart.

use std::path::Path;

use crate::config::{Config, Secret};

/// Values people leave in place; never acceptable in production.
const KNOWN_DEFAULTS: &[&str] = &[
    "change-this-secret-key-in-production",
    "changeme",
    "secret",
    "your-secret-key",
    "dev-secret",
];

const MIN_LEN: usize = 32;

#[derive(Debug)]
pub struct SecretError(pub String);

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SecretError {}

/// The resolved secrets.
pub struct GateSecrets {
    pub jwt: Secret,
    pub api_key_pepper: Secret,
}

pub fn resolve(config: &Config) -> Result<GateSecrets, SecretError> {
    let a = &config.auth;
    Ok(GateSecrets {
        jwt: one(
            config,
            a.jwt_secret.as_ref(),
            "GATE_JWT_SECRET",
            "jwt_secret",
        )?,
        api_key_pepper: one(
            config,
            a.api_key_pepper.as_ref(),
            "GATE_API_KEY_PEPPER",
            "api_key_pepper",
        )?,
    })
}

fn one(
    config: &Config,
    given: Option<&Secret>,
    var: &str,
    file: &str,
) -> Result<Secret, SecretError> {
    if let Some(s) = given {
        let weak = s.expose().len() < MIN_LEN || KNOWN_DEFAULTS.contains(&s.expose());
        if weak && config.is_production() {
            return Err(SecretError(format!(
                "{var} is too weak for production: use at least {MIN_LEN} random characters (openssl rand -hex 32)"
            )));
        }
        if weak {
            tracing::warn!("{var} is weak; production would refuse it");
        }
        return Ok(s.clone());
    }
    if config.is_production() {
        return Err(SecretError(format!(
            "{var} is not set: production refuses to run with a generated secret"
        )));
    }
    let path = config.data_dir.join(file);
    let secret = load_or_generate(&path)?;
    tracing::warn!(
        path = %path.display(),
        "{var} is not set: using a secret generated for development. Set {var} in production."
    );
    Ok(secret)
}

fn load_or_generate(path: &Path) -> Result<Secret, SecretError> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let text = text.trim();
        if text.len() >= MIN_LEN {
            return Ok(Secret(text.to_string()));
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| SecretError(format!("cannot create {}: {e}", dir.display())))?;
    }
    let value = super::random::hex(32);
    write_private(path, &value)
        .map_err(|e| SecretError(format!("cannot write {}: {e}", path.display())))?;
    Ok(Secret(value))
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(value.as_bytes())
}
