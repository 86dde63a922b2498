//! Semantic validation: turns the parsed file into a [`Config`], or lists every problem with the
//! key and the line it is on. All problems are collected, not just the first, so an operator
//! fixes a file in one pass.

use crate::formats::ids::QuotaKey;
use http::Method;
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

use super::env::Secrets;
use super::schema::{Access, FileConfig, MeterSection, RouteSection};
use super::tasks::Tasks;
use super::tenancy::{RouteKeys, Tenancy};
use super::{
    AuthConfig, Config, ConfigError, CorsConfig, Cost, DatabaseConfig, JsonPredicate, Meter,
    PaymentsConfig, PlanSpec, QuotaType, RouteSpec, Secret, SettleRule, SmtpConfig, SmtpSecurity,
    StatusMatch, UpstreamConfig,
};

/// Collects problems as `source:line: key: message`.
struct Problems<'a> {
    source: &'a str,
    text: &'a str,
    list: Vec<String>,
}

impl Problems<'_> {
    fn at(&mut self, span_start: Option<usize>, key: &str, msg: impl std::fmt::Display) {
        match span_start {
            Some(start) => {
                let line = line_of(self.text, start);
                self.list
                    .push(format!("{}:{line}: {key}: {msg}", self.source));
            }
            None => self.list.push(format!("{}: {key}: {msg}", self.source)),
        }
    }
}

/// 1-based line number of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

const MAX_TIMEOUT_SECS: u64 = 24 * 3600;
/// More connection threads than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

pub fn validate(
    file: FileConfig,
    text: &str,
    source: &str,
    secrets: Secrets,
) -> Result<Config, ConfigError> {
    let mut p = Problems {
        source,
        text,
        list: Vec::new(),
    };
    let s = &file.server;
    check_secs(&mut p, "server.timeout_secs", s.timeout_secs);
    check_secs(
        &mut p,
        "server.header_read_timeout_secs",
        s.header_read_timeout_secs,
    );
    check_secs(
        &mut p,
        "server.client_body_timeout_secs",
        s.client_body_timeout_secs,
    );
    if s.workers > MAX_WORKERS {
        p.at(
            None,
            "server.workers",
            format!("must be at most {MAX_WORKERS} (0: one per core)"),
        );
    }
    if s.shutdown_grace_secs > 3600 {
        p.at(None, "server.shutdown_grace_secs", "must be at most 3600");
    }
    if s.max_body.0 == 0 {
        p.at(None, "server.max_body", "must be greater than zero");
    }
    for (key, prefix) in [
        ("server.api_prefix", &s.api_prefix),
        ("server.backend_prefix", &s.backend_prefix),
    ] {
        if let Some(pfx) = prefix {
            if pfx.len() < 2 || check_template(pfx).is_err() || pfx.contains('{') {
                p.at(
                    None,
                    key,
                    format!(
                        "`{pfx}` must be a plain path such as /api (no trailing `/`, no parameters)"
                    ),
                );
            }
        }
    }
    if let Some(t) = &s.tls {
        if let Err(e) = crate::formats::tls_files::acceptor(&t.cert_file, &t.key_file) {
            p.at(None, "server.tls", e);
        }
    }
    if s.data_dir.trim().is_empty() {
        p.at(None, "server.data_dir", "must not be empty");
    }

    let upstream = validate_upstream(&mut p, &file);
    let database = validate_database(&mut p, &file);
    let cors = validate_cors(&mut p, &file);
    let smtp = validate_smtp(&mut p, &file, secrets.smtp_password.clone());
    let provider_secrets = (
        secrets.alipay_private_key.clone(),
        secrets.wechat_private_key.clone(),
        secrets.wechat_api_v3_key.clone(),
    );
    let auth = validate_auth(&mut p, &file, secrets);
    let payments = validate_payments(&mut p, &file, provider_secrets);

    let mut quota_types = Vec::new();
    let mut seen_types = HashSet::new();
    for qt in &file.quota_types {
        let start = Some(qt.span().start);
        let q = qt.get_ref();
        if let Err(why) = QuotaKey::parse(&q.key) {
            p.at(start, "quota_type.key", why);
        } else if !seen_types.insert(q.key.clone()) {
            p.at(
                start,
                "quota_type.key",
                format!("`{}` is declared twice", q.key),
            );
        }
        quota_types.push(QuotaType {
            key: QuotaKey::from(q.key.clone()),
            name: q.name.clone(),
            unit: q.unit.clone(),
        });
    }

    let plans = validate_plans(&mut p, &file, &seen_types);
    let default_timeout = Duration::from_secs(s.timeout_secs);
    let tenancy = match Tenancy::validate(&file.tenancy) {
        Ok(t) => t,
        Err(problems) => {
            for m in problems {
                p.list.push(format!("{source}: {m}"));
            }
            Tenancy::validate(&Default::default()).expect("the defaults are valid")
        }
    };
    let mut routes = Vec::new();
    for route in &file.routes {
        if let Some(spec) = validate_route(
            &mut p,
            route,
            &seen_types,
            default_timeout,
            s.max_body.0,
            &tenancy,
        ) {
            routes.push(spec);
        }
    }

    let mut mounts = Vec::new();
    for section in &file.statics {
        let start = Some(section.span().start);
        let line = line_of(text, section.span().start);
        match super::mounts::Mount::validate(section.get_ref(), line) {
            Ok(m) => {
                for root in m.roots() {
                    if let Some(own) = super::own_paths::owner_of(&root) {
                        p.at(
                            start,
                            "static.at",
                            format!(
                                "`{root}` is answered by the gate's own {own}: mount elsewhere"
                            ),
                        );
                    }
                }
                if mounts.iter().any(|o: &super::mounts::Mount| o.at == m.at) {
                    p.at(start, "static.at", format!("`{}` is mounted twice", m.at));
                }
                mounts.push(m);
            }
            Err(problems) => {
                for m in problems {
                    let (key, msg) = m.split_once(": ").unwrap_or(("static", &m));
                    p.at(start, key, msg.to_string());
                }
            }
        }
    }
    mounts.sort_by_key(|m| std::cmp::Reverse(m.at.len()));

    let tasks = match Tasks::validate(&file.tasks, &mut routes) {
        Ok(t) => t,
        Err(m) => {
            p.list.push(format!("{source}: {m}"));
            None
        }
    };

    if !p.list.is_empty() {
        return Err(ConfigError { problems: p.list });
    }
    let upstream = upstream.expect("no problems means the upstream parsed");
    Ok(Config {
        source: source.to_string(),
        listen: s.listen,
        environment: s.environment,
        data_dir: PathBuf::from(&s.data_dir),
        max_body: s.max_body.0,
        timeout: default_timeout,
        header_read_timeout: Duration::from_secs(s.header_read_timeout_secs),
        client_body_timeout: Duration::from_secs(s.client_body_timeout_secs),
        shutdown_grace: Duration::from_secs(s.shutdown_grace_secs),
        workers: match s.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
        balance: s.balance,
        unknown_routes: s.unknown_routes,
        trusted_proxies: s.trusted_proxies.clone(),
        api_prefix: s.api_prefix.clone(),
        tls: s
            .tls
            .as_ref()
            .map(|t| (t.cert_file.clone(), t.key_file.clone())),
        backend_prefix: s.backend_prefix.clone(),
        upstream,
        database,
        cors,
        auth,
        payments,
        smtp,
        quota_types,
        plans,
        routes,
        mounts,
        tenancy,
        tasks,
    })
}

fn check_secs(p: &mut Problems, key: &str, v: u64) {
    if v == 0 || v > MAX_TIMEOUT_SECS {
        p.at(
            None,
            key,
            format!("must be between 1 and {MAX_TIMEOUT_SECS} seconds, not {v}"),
        );
    }
}

fn validate_upstream(p: &mut Problems, file: &FileConfig) -> Option<UpstreamConfig> {
    let u = &file.upstream;
    check_secs(p, "upstream.connect_timeout_secs", u.connect_timeout_secs);
    if u.pool_idle_timeout_secs == 0 || u.pool_idle_timeout_secs > 300 {
        p.at(
            None,
            "upstream.pool_idle_timeout_secs",
            "must be between 1 and 300 (keep it below the backend's keep-alive: uvicorn's is 5 s)",
        );
    }
    let uri: http::Uri = match u.url.parse() {
        Ok(uri) => uri,
        Err(e) => {
            p.at(
                None,
                "upstream.url",
                format!("`{}` is not a URL: {e}", u.url),
            );
            return None;
        }
    };
    if uri.scheme_str() != Some("http") {
        p.at(
            None,
            "upstream.url",
            format!(
                "`{}` must be an http:// URL (the backend is on the same host or network)",
                u.url
            ),
        );
        return None;
    }
    let Some(authority) = uri.authority().cloned() else {
        p.at(None, "upstream.url", format!("`{}` has no host", u.url));
        return None;
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        p.at(
            None,
            "upstream.url",
            format!(
                "`{}` must not have a path or query: the gate forwards the client's path as it is",
                u.url
            ),
        );
    }
    Some(UpstreamConfig {
        url: u.url.clone(),
        authority,
        connect_timeout: Duration::from_secs(u.connect_timeout_secs),
        pool_idle_timeout: Duration::from_secs(u.pool_idle_timeout_secs),
        pool_max_idle_per_host: u.pool_max_idle_per_host,
    })
}

fn validate_database(p: &mut Problems, file: &FileConfig) -> DatabaseConfig {
    let url = match &file.database.url {
        Some(url) => url.clone(),
        None => {
            let dir = file.server.data_dir.trim_end_matches('/');
            format!("sqlite://{dir}/gate.db")
        }
    };
    let is_sqlite = url.starts_with("sqlite:");
    if !is_sqlite && !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
        // Never echo the URL: it may hold a password.
        p.at(
            None,
            "database.url",
            "must start with sqlite:, postgres:// or postgresql://",
        );
    }
    let max_connections = file
        .database
        .max_connections
        .unwrap_or(if is_sqlite { 8 } else { 16 });
    if max_connections == 0 {
        p.at(None, "database.max_connections", "must be at least 1");
    }
    DatabaseConfig {
        url,
        max_connections,
    }
}

fn validate_cors(p: &mut Problems, file: &FileConfig) -> CorsConfig {
    let c = &file.cors;
    for origin in &c.allow_origins {
        let ok = origin
            .parse::<http::Uri>()
            .ok()
            .filter(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.authority().is_some()
                    && matches!(u.path(), "" | "/")
                    && !origin.ends_with('/')
            })
            .is_some();
        if !ok {
            p.at(None, "cors.allow_origins", format!("`{origin}` is not an origin such as https://app.example.com (scheme, host, optional port, no path)"));
        }
    }
    CorsConfig {
        allow_origins: c.allow_origins.clone(),
        allow_credentials: c.allow_credentials,
        max_age_secs: c.max_age_secs,
    }
}

/// Parses a price (a decimal string or an integer of yuan) into fen; at most two decimals.
pub fn price_to_fen(v: &toml::Value) -> Result<i64, String> {
    let text =
        match v {
            toml::Value::String(s) => s.trim().to_string(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(_) => return Err(
                "write the price as a string such as \"99.00\": floats cannot hold money exactly"
                    .into(),
            ),
            other => return Err(format!("`{other}` is not a price")),
        };
    crate::formats::money::parse_fen(&text)
}

fn validate_plans(
    p: &mut Problems,
    file: &FileConfig,
    quota_types: &HashSet<String>,
) -> Vec<PlanSpec> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for plan in &file.plans {
        let start = Some(plan.span().start);
        let pl = plan.get_ref();
        if pl.name.trim().is_empty() {
            p.at(start, "plan.name", "must not be empty");
        } else if !names.insert(pl.name.clone()) {
            p.at(
                start,
                "plan.name",
                format!("`{}` is declared twice", pl.name),
            );
        }
        let price_fen = match price_to_fen(&pl.price) {
            Ok(f) => f,
            Err(e) => {
                p.at(start, "plan.price", e);
                0
            }
        };
        if !matches!(pl.currency.as_str(), "CNY" | "USD") {
            p.at(
                start,
                "plan.currency",
                format!("`{}` is not CNY or USD", pl.currency),
            );
        }
        if !matches!(pl.billing_cycle.as_str(), "monthly" | "yearly" | "lifetime") {
            p.at(
                start,
                "plan.billing_cycle",
                format!("`{}` is not monthly, yearly or lifetime", pl.billing_cycle),
            );
        }
        let mut quotas = Vec::new();
        for (key, value) in &pl.quotas {
            if !quota_types.contains(key) {
                p.at(
                    start,
                    "plan.quotas",
                    format!("`{key}` is not a declared [[quota_type]]"),
                );
                continue;
            }
            match value {
                toml::Value::Integer(n) if *n >= 0 => quotas.push((key.clone(), *n)),
                toml::Value::String(s) if s == "unlimited" => quotas.push((key.clone(), -1)),
                other => p.at(
                    start,
                    "plan.quotas",
                    format!("{key} = {other}: a limit is a whole number >= 0 or \"unlimited\""),
                ),
            }
        }
        out.push(PlanSpec {
            name: pl.name.clone(),
            description: pl.description.clone(),
            price_fen,
            currency: pl.currency.clone(),
            billing_cycle: pl.billing_cycle.clone(),
            is_default: pl.default,
            features: serde_json::to_string(&pl.features).unwrap_or_else(|_| "{}".into()),
            quotas,
        });
    }
    let defaults = out.iter().filter(|pl| pl.is_default).count();
    if !out.is_empty() && defaults != 1 {
        p.at(None, "plan.default", format!("exactly one [[plan]] must be the default (the plan new users start on), not {defaults}"));
    }
    if out.iter().any(|pl| pl.is_default && pl.price_fen != 0) {
        p.at(
            None,
            "plan.default",
            "the default plan must be free: it is what unpaid users fall back to",
        );
    }
    out
}

fn read_file(p: &mut Problems, key: &str, path: &str) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) => {
            p.at(None, key, format!("cannot read {path}: {e}"));
            None
        }
    }
}

fn validate_alipay(
    p: &mut Problems,
    a: &super::schema::AlipaySection,
    public_url: &str,
    env_key: Option<String>,
) -> Option<super::AlipayConfig> {
    let before = p.list.len();
    if a.app_id.trim().is_empty() || !a.app_id.bytes().all(|b| b.is_ascii_digit()) {
        p.at(
            None,
            "payments.alipay.app_id",
            format!("`{}` is not an Alipay APPID (digits)", a.app_id),
        );
    }
    let certs = match (
        &a.app_cert_file,
        &a.alipay_cert_file,
        &a.alipay_root_cert_file,
    ) {
        (None, None, None) => None,
        (Some(app), Some(alipay), Some(root)) => Some(super::alipay_certs::CertFiles {
            app_cert: ("payments.alipay.app_cert_file", app),
            alipay_cert: ("payments.alipay.alipay_cert_file", alipay),
            root_cert: ("payments.alipay.alipay_root_cert_file", root),
        }),
        _ => {
            p.at(
                None,
                "payments.alipay",
                "certificate mode needs all of app_cert_file, alipay_cert_file and alipay_root_cert_file",
            );
            None
        }
    };
    let cert_mode_asked = a.app_cert_file.is_some() || a.alipay_cert_file.is_some();
    let public = match (
        &a.alipay_public_key,
        &a.alipay_public_key_file,
        cert_mode_asked,
    ) {
        (Some(k), None, false) => Some(k.clone()),
        (None, Some(f), false) => read_file(p, "payments.alipay.alipay_public_key_file", f),
        (None, None, true) => None,
        (_, _, true) => {
            p.at(
                None,
                "payments.alipay",
                "certificate mode reads Alipay's key from alipay_cert_file: remove alipay_public_key",
            );
            None
        }
        _ => {
            p.at(
                None,
                "payments.alipay",
                "set exactly one of alipay_public_key, alipay_public_key_file (or the three certificate files)",
            );
            None
        }
    };
    if let Some(k) = &public {
        if let Err(e) = crate::formats::rsa_keys::public_key(k) {
            p.at(None, "payments.alipay.alipay_public_key", e);
        }
    }
    let private = match (env_key, &a.private_key_file) {
        (Some(k), _) => Some(k),
        (None, Some(f)) => read_file(p, "payments.alipay.private_key_file", f),
        (None, None) => {
            p.at(None, "payments.alipay", "the app private key is missing: set GATE_ALIPAY_PRIVATE_KEY(_FILE) or private_key_file");
            None
        }
    };
    if let Some(k) = &private {
        // Never echo the key: only say that it did not parse.
        if crate::formats::rsa_keys::private_key(k).is_err() {
            p.at(
                None,
                "payments.alipay.private_key",
                "the app private key is not an RSA key in PEM or base64 DER",
            );
        }
    }
    let mut cert_mode = None;
    let mut public = public;
    if let Some(files) = &certs {
        match super::alipay_certs::load(files, private.as_deref()) {
            Ok((mode, key)) => {
                cert_mode = Some(mode);
                public = Some(key);
            }
            Err(problems) => {
                for (key, msg) in problems {
                    p.at(None, &key, msg);
                }
            }
        }
    }
    if !matches!(a.checkout.as_str(), "precreate" | "page" | "wap") {
        p.at(
            None,
            "payments.alipay.checkout",
            format!("`{}` is not precreate, page or wap", a.checkout),
        );
    }
    if !a.gateway.starts_with("https://") && !a.gateway.starts_with("http://") {
        p.at(None, "payments.alipay.gateway", "must be an http(s) URL");
    }
    if p.list.len() > before {
        return None;
    }
    Some(super::AlipayConfig {
        app_id: a.app_id.clone(),
        gateway: a.gateway.clone(),
        alipay_public_key: public?,
        private_key: Secret(private?),
        seller_id: a.seller_id.clone(),
        checkout: a.checkout.clone(),
        return_url: a.return_url.clone(),
        cert_mode,
        quit_url: a
            .quit_url
            .clone()
            .unwrap_or_else(|| format!("{}/portal/payments", public_url.trim_end_matches('/'))),
        notify_url: a
            .notify_url
            .clone()
            .unwrap_or_else(|| format!("{}/webhooks/alipay", public_url.trim_end_matches('/'))),
    })
}

fn validate_wechat(
    p: &mut Problems,
    w: &super::schema::WechatSection,
    public_url: &str,
    env_key: Option<String>,
    api_v3_key: Option<String>,
) -> Option<super::WechatConfig> {
    let before = p.list.len();
    if w.mchid.trim().is_empty()
        || w.appid.trim().is_empty()
        || w.merchant_serial_no.trim().is_empty()
    {
        p.at(
            None,
            "payments.wechat",
            "mchid, appid and merchant_serial_no are required",
        );
    }
    let private = match (env_key, &w.private_key_file) {
        (Some(k), _) => Some(k),
        (None, Some(f)) => read_file(p, "payments.wechat.private_key_file", f),
        (None, None) => {
            p.at(None, "payments.wechat", "the merchant private key is missing: set GATE_WECHAT_PRIVATE_KEY(_FILE) or private_key_file");
            None
        }
    };
    if private
        .as_deref()
        .is_some_and(|k| crate::formats::rsa_keys::private_key(k).is_err())
    {
        p.at(
            None,
            "payments.wechat.private_key",
            "the merchant private key is not an RSA key in PEM or base64 DER",
        );
    }
    match &api_v3_key {
        Some(k) if k.len() == 32 && k.is_ascii() => {}
        Some(_) => p.at(
            None,
            "GATE_WECHAT_API_V3_KEY",
            "the APIv3 key must be 32 ASCII characters",
        ),
        None => p.at(
            None,
            "payments.wechat",
            "the APIv3 key is missing: set GATE_WECHAT_API_V3_KEY(_FILE)",
        ),
    }
    let public_key = match (&w.public_key_id, &w.public_key, &w.public_key_file) {
        (None, None, None) => None,
        (Some(id), Some(k), None) => Some((id.clone(), k.clone())),
        (Some(id), None, Some(f)) => {
            read_file(p, "payments.wechat.public_key_file", f).map(|k| (id.clone(), k))
        }
        _ => {
            p.at(
                None,
                "payments.wechat",
                "public-key mode needs public_key_id and one of public_key, public_key_file",
            );
            None
        }
    };
    if let Some((id, k)) = &public_key {
        if !id.starts_with("PUB_KEY_ID_") {
            p.at(
                None,
                "payments.wechat.public_key_id",
                format!("`{id}` does not start with PUB_KEY_ID_"),
            );
        }
        if let Err(e) = crate::formats::rsa_keys::public_key(k) {
            p.at(None, "payments.wechat.public_key", e);
        }
    }
    let mut certs = Vec::new();
    for f in &w.platform_certificates {
        if let Some(pem) = read_file(p, "payments.wechat.platform_certificates", f) {
            certs.push(pem);
        }
    }
    if public_key.is_none() && certs.is_empty() {
        p.at(None, "payments.wechat", "configure the WeChat Pay public key (public_key_id + public_key) or platform_certificates to verify WeChat's signatures");
    }
    if p.list.len() > before {
        return None;
    }
    Some(super::WechatConfig {
        mchid: w.mchid.clone(),
        appid: w.appid.clone(),
        api_base: w.api_base.trim_end_matches('/').to_string(),
        merchant_serial_no: w.merchant_serial_no.clone(),
        private_key: Secret(private?),
        api_v3_key: Secret(api_v3_key?),
        public_key,
        platform_certificates: certs,
        notify_url: w
            .notify_url
            .clone()
            .unwrap_or_else(|| format!("{}/webhooks/wechat", public_url.trim_end_matches('/'))),
    })
}

fn validate_payments(
    p: &mut Problems,
    file: &FileConfig,
    (alipay_key, wechat_key, wechat_v3): (Option<String>, Option<String>, Option<String>),
) -> PaymentsConfig {
    let s = &file.payments;
    let production = file.server.environment == super::Environment::Production;
    let sandbox = s.sandbox.unwrap_or(!production);
    if sandbox && production {
        p.at(
            None,
            "payments.sandbox",
            "the sandbox provider completes payments without money: never in production",
        );
    }
    let url_ok = s.public_url.parse::<http::Uri>().ok().is_some_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some()
    });
    if !url_ok {
        p.at(
            None,
            "payments.public_url",
            format!("`{}` is not an http(s) URL", s.public_url),
        );
    }
    if s.order_ttl_minutes == 0 || s.order_ttl_minutes > 7 * 24 * 60 {
        p.at(
            None,
            "payments.order_ttl_minutes",
            "must be between 1 and 10080",
        );
    }
    if s.reconcile_interval_secs == 0 || s.reconcile_after_secs == 0 {
        p.at(
            None,
            "payments.reconcile_interval_secs",
            "reconciliation intervals must be at least 1 s",
        );
    }
    let alipay = s
        .alipay
        .as_ref()
        .and_then(|a| validate_alipay(p, a, &s.public_url, alipay_key));
    let wechat = s
        .wechat
        .as_ref()
        .and_then(|w| validate_wechat(p, w, &s.public_url, wechat_key, wechat_v3));
    PaymentsConfig {
        wechat,
        alipay,
        sandbox,
        public_url: s.public_url.trim_end_matches('/').to_string(),
        order_ttl: Duration::from_secs(s.order_ttl_minutes * 60),
        reconcile_interval: Duration::from_secs(s.reconcile_interval_secs),
        reconcile_after: Duration::from_secs(s.reconcile_after_secs),
        partial_refund_shortens: s.partial_refund_shortens,
    }
}

fn validate_auth(p: &mut Problems, file: &FileConfig, secrets: Secrets) -> AuthConfig {
    let a = &file.auth;
    let ranges: [(&str, u64, u64, u64); 9] = [
        (
            "auth.access_token_minutes",
            a.access_token_minutes,
            1,
            24 * 60,
        ),
        ("auth.refresh_token_days", a.refresh_token_days, 1, 365),
        (
            "auth.refresh_reuse_grace_secs",
            a.refresh_reuse_grace_secs,
            0,
            120,
        ),
        (
            "auth.verification_code_minutes",
            a.verification_code_minutes,
            1,
            24 * 60,
        ),
        ("auth.login_window_secs", a.login_window_secs, 1, 24 * 3600),
        (
            "auth.login_account_interval_secs",
            a.login_account_interval_secs,
            1,
            3600,
        ),
        ("auth.cache_ttl_secs", a.cache_ttl_secs, 1, 300),
        ("auth.stale_if_error_secs", a.stale_if_error_secs, 0, 86_400),
        ("auth.backend_jwt_secs", a.backend_jwt_secs, 30, 24 * 3600),
    ];
    for (key, v, lo, hi) in ranges {
        if v < lo || v > hi {
            p.at(None, key, format!("must be between {lo} and {hi}, not {v}"));
        }
    }
    for (key, v) in [
        (
            "auth.verification_code_attempts",
            a.verification_code_attempts,
        ),
        ("auth.login_max_failures", a.login_max_failures),
        (
            "auth.login_max_failures_per_ip",
            a.login_max_failures_per_ip,
        ),
        ("auth.login_account_burst", a.login_account_burst),
    ] {
        if v == 0 {
            p.at(None, key, "must be at least 1");
        }
    }
    if a.require_email_verification
        && file.smtp.is_none()
        && file.server.environment == super::Environment::Production
    {
        p.at(
            None,
            "auth.require_email_verification",
            "needs an [smtp] section in production: codes could not be delivered",
        );
    }
    AuthConfig {
        access_ttl: Duration::from_secs(a.access_token_minutes * 60),
        refresh_ttl: Duration::from_secs(a.refresh_token_days * 86400),
        refresh_reuse_grace: Duration::from_secs(a.refresh_reuse_grace_secs),
        require_email_verification: a.require_email_verification,
        code_ttl: Duration::from_secs(a.verification_code_minutes * 60),
        code_attempts: a.verification_code_attempts,
        login_max_failures: a.login_max_failures,
        login_max_failures_per_ip: a.login_max_failures_per_ip,
        login_window: Duration::from_secs(a.login_window_secs),
        login_account_burst: a.login_account_burst,
        login_account_interval: Duration::from_secs(a.login_account_interval_secs),
        cache_ttl: Duration::from_secs(a.cache_ttl_secs),
        stale_if_error: Duration::from_secs(a.stale_if_error_secs),
        backend_jwt_ttl: Duration::from_secs(a.backend_jwt_secs),
        image_cookie: a.image_cookie,
        image_cookie_secure: a.image_cookie_secure,
        jwt_secret: secrets.jwt_secret.map(Secret),
        backend_jwt_secret: secrets.backend_jwt_secret.map(Secret),
        api_key_pepper: secrets.api_key_pepper.map(Secret),
    }
}

fn validate_smtp(
    p: &mut Problems,
    file: &FileConfig,
    password: Option<String>,
) -> Option<SmtpConfig> {
    let s = file.smtp.as_ref()?;
    if s.host.trim().is_empty() {
        p.at(None, "smtp.host", "must not be empty");
    }
    if !s.from_email.contains('@') {
        p.at(
            None,
            "smtp.from_email",
            format!("`{}` is not an email address", s.from_email),
        );
    }
    let security = match s.security.as_str() {
        "starttls" => SmtpSecurity::StartTls,
        "tls" => SmtpSecurity::Tls,
        "none" => SmtpSecurity::None,
        other => {
            p.at(
                None,
                "smtp.security",
                format!("`{other}` is not one of starttls, tls, none"),
            );
            SmtpSecurity::StartTls
        }
    };
    Some(SmtpConfig {
        host: s.host.clone(),
        port: s.port,
        username: s.username.clone(),
        password: password.map(Secret),
        security,
        from_email: s.from_email.clone(),
        from_name: s.from_name.clone(),
    })
}

fn validate_route(
    p: &mut Problems,
    route: &Spanned<RouteSection>,
    quota_types: &HashSet<String>,
    default_timeout: Duration,
    default_max_body: u64,
    tenancy: &Tenancy,
) -> Option<RouteSpec> {
    let start = Some(route.span().start);
    let r = route.get_ref();
    let before = p.list.len();

    if let Some(own) = super::own_paths::shadowing(&r.path) {
        p.at(
            start,
            "route.path",
            format!(
                "`{}` is answered by the gate's own endpoints (`{own}`): requests to it would never reach the backend",
                r.path
            ),
        );
    }
    if let Err(msg) = check_template(&r.path) {
        p.at(start, "route.path", format!("`{}` {msg}", r.path));
    }
    let methods = if r.methods.is_empty() {
        None
    } else {
        let mut out: Vec<Method> = Vec::new();
        // The methods HTTP defines (RFC 9110 §9, PATCH from RFC 5789): a typo such as `GTE`
        // would otherwise make a route that matches nothing.
        const KNOWN: [&str; 9] = [
            "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
        ];
        for m in &r.methods {
            if m.bytes().all(|b| b.is_ascii_uppercase()) && !KNOWN.contains(&m.as_str()) {
                p.at(
                    start,
                    "route.methods",
                    format!("`{m}` is not an HTTP method (one of {})", KNOWN.join(", ")),
                );
                continue;
            }
            let valid = !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase());
            match Method::from_bytes(m.as_bytes()) {
                Ok(method) if valid => {
                    if out.contains(&method) {
                        p.at(start, "route.methods", format!("`{m}` is listed twice"));
                    }
                    out.push(method);
                }
                _ => p.at(
                    start,
                    "route.methods",
                    format!("`{m}` is not an upper-case HTTP method"),
                ),
            }
        }
        Some(out)
    };
    if let Some(t) = r.timeout_secs {
        if t == 0 || t > MAX_TIMEOUT_SECS {
            p.at(
                start,
                "route.timeout_secs",
                format!("must be between 1 and {MAX_TIMEOUT_SECS}, not {t}"),
            );
        }
    }
    if let Some(b) = r.max_body {
        if b.0 == 0 {
            p.at(start, "route.max_body", "must be greater than zero");
        }
    }
    let meter = match &r.meter {
        None => None,
        Some(m) => validate_meter(p, start, r.access, m, quota_types),
    };
    if r.access == Access::Blocked
        && (r.query_token || r.timeout_secs.is_some() || r.max_body.is_some())
    {
        p.at(
            start,
            "route.access",
            "a blocked route is never forwarded: remove query_token, timeout_secs and max_body",
        );
    }

    let mut tenancy_problems = Vec::new();
    let route_tenancy = tenancy.route(
        &RouteKeys {
            template: &r.path,
            access: r.access,
            creates: r.creates.as_ref(),
            owner_only: r.owner_only.as_ref(),
            owned_list: r.owned_list.as_ref(),
            patient_list: r.patient_list.as_ref(),
            multipart: r.multipart,
        },
        &mut tenancy_problems,
    );
    for (key, msg) in tenancy_problems {
        p.at(start, key, msg);
    }

    if p.list.len() > before {
        return None;
    }
    Some(RouteSpec {
        line: start.map(|s| line_of(p.text, s)).unwrap_or(0),
        path: r.path.clone(),
        methods,
        access: r.access,
        query_token: r.query_token,
        timeout: r
            .timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(default_timeout),
        max_body: r.max_body.map(|b| b.0).unwrap_or(default_max_body),
        meter,
        tenancy: route_tenancy,
    })
}

fn validate_meter(
    p: &mut Problems,
    start: Option<usize>,
    access: Access,
    m: &MeterSection,
    quota_types: &HashSet<String>,
) -> Option<Meter> {
    let before = p.list.len();
    if !matches!(access, Access::User | Access::Admin) {
        p.at(start, "route.meter", format!("a {} route cannot be metered: only `user` and `admin` routes have someone to charge", access.as_str()));
    }
    if !quota_types.contains(&m.quota) {
        p.at(
            start,
            "route.meter.quota",
            format!("`{}` is not a declared [[quota_type]]", m.quota),
        );
    }
    let cost = match (m.cost, m.cost_per_mb) {
        (Some(0), None) | (None, Some(0)) => {
            p.at(start, "route.meter.cost", "must be greater than zero");
            None
        }
        (Some(c), None) => Some(Cost::Fixed(c)),
        (None, Some(c)) => Some(Cost::PerMb(c)),
        (Some(_), Some(_)) => {
            p.at(
                start,
                "route.meter",
                "set either `cost` or `cost_per_mb`, not both",
            );
            None
        }
        (None, None) => {
            p.at(
                start,
                "route.meter",
                "needs `cost` (units per request) or `cost_per_mb` (units per MB of body)",
            );
            None
        }
    };
    let mut status = Vec::new();
    for s in &m.settle.status {
        match parse_status(s) {
            Some(sm) => status.push(sm),
            None => p.at(
                start,
                "route.meter.settle.status",
                format!("`{s}` is neither a status such as 200 nor a class such as 2xx"),
            ),
        }
    }
    if status.is_empty() {
        p.at(
            start,
            "route.meter.settle.status",
            "must list at least one status or class",
        );
    }
    let json = match (
        &m.settle.json_field,
        &m.settle.json_equals,
        m.settle.json_absent,
    ) {
        (None, None, false) => None,
        (Some(f), Some(v), false) => Some(JsonPredicate::Equals {
            field: f.clone(),
            value: v.clone(),
        }),
        (Some(f), None, true) => Some(JsonPredicate::Absent { field: f.clone() }),
        (Some(_), None, false) => {
            p.at(
                start,
                "route.meter.settle",
                "json_field needs json_equals or json_absent = true",
            );
            None
        }
        (Some(_), Some(_), true) => {
            p.at(
                start,
                "route.meter.settle",
                "set json_equals or json_absent, not both",
            );
            None
        }
        (None, _, _) => {
            p.at(
                start,
                "route.meter.settle",
                "json_equals and json_absent need json_field",
            );
            None
        }
    };
    if p.list.len() > before {
        return None;
    }
    Some(Meter {
        quota: QuotaKey::from(m.quota.clone()),
        cost: cost?,
        settle: SettleRule { status, json },
    })
}

fn parse_status(s: &str) -> Option<StatusMatch> {
    let b = s.as_bytes();
    if b.len() != 3 || !(b'1'..=b'5').contains(&b[0]) {
        return None;
    }
    if b[1..].eq_ignore_ascii_case(b"xx") {
        return Some(StatusMatch::Class((b[0] - b'0') as u16));
    }
    s.parse::<u16>().ok().map(StatusMatch::Exact)
}

/// A route template is already canonical: the gate matches canonical paths only, so a template
/// with `..`, `//`, `%` or `\` could never match, or would match something unintended.
fn check_template(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must start with `/`");
    }
    if path.contains("//") {
        return Err("must not contain `//`");
    }
    if path.contains('%') || path.contains('\\') || path.contains('?') || path.contains('#') {
        return Err("must not contain `%`, `\\`, `?` or `#`");
    }
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("must not contain spaces or control characters");
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("must not contain `.` or `..` segments");
    }
    if path.len() > 1 && path.ends_with('/') {
        return Err("must not end with `/` (a trailing slash is matched either way)");
    }
    Ok(())
}
