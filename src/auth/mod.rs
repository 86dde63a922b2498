//! Authentication: who is calling, as a [`Principal`], and the account operations behind the
//! `/auth`, `/users` and `/api-keys` endpoints.
//!
//! The hot path ([`AuthService::authenticate`]) verifies a JWT in memory or hashes an API key
//! with HMAC, then reads the user's state from the cache: no database round trip for a warm
//! principal. Slow work (argon2) runs on the blocking pool behind a semaphore.

mod accounts;
pub mod cache;
mod codes;
pub mod credentials;
pub mod keys;
mod mail;
mod password;
pub mod random;
pub mod secrets;
mod sessions;
mod throttle;
pub mod tokens;
mod verified;

use http::HeaderValue;
use http::request::Parts;
use moka::future::Cache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::error::{Refusal, RefusalKind};
use crate::formats::ids::UserId;
use crate::store::Store;
use cache::{AuthCache, KeyState, UserState};
use credentials::Credential;
use keys::KeyHasher;
use password::Passwords;
use throttle::Throttle;
use tokens::{Kind, Signer, TokenError};

pub use accounts::{ApiKeyCreated, NewAccount, ProfileUpdate, normalise_email};
pub use sessions::TokenPair;

/// A verified caller. Cloned from the principal cache for every authenticated request, so it
/// is made of shared parts: cloning it allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub email: Option<Arc<str>>,
    pub is_superuser: bool,
    /// The account as the backend is told it, made once per cache entry.
    pub identity: Identity,
}

/// `X-User-Id` and `X-User-Email` for the backend (`None` where a value cannot be a header).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Identity {
    pub user_id: Option<HeaderValue>,
    pub email: Option<HeaderValue>,
}

impl Identity {
    pub fn new(user_id: &str, email: Option<&str>) -> Identity {
        Identity {
            user_id: HeaderValue::from_str(user_id).ok(),
            email: email.and_then(|e| HeaderValue::from_str(e).ok()),
        }
    }
}

/// A user as the caches know it, as a principal: 401 if gone, 403 if disabled.
fn principal_of(user: Option<Arc<UserState>>) -> Result<Principal, Refusal> {
    let Some(user) = user else {
        return Err(Refusal::unauthenticated(
            "用户不存在: the account no longer exists",
        ));
    };
    if !user.active {
        return Err(Refusal::forbidden("账号已被禁用: this account is disabled"));
    }
    Ok(Principal {
        user_id: user.id.clone(),
        email: Some(user.email.clone()),
        is_superuser: user.superuser,
        identity: user.identity.clone(),
    })
}

/// Everything accounts and authentication need, built once per configuration.
pub struct AuthService {
    store: Store,
    config: Arc<Config>,
    signer: Signer,
    backend_signer: Option<Signer>,
    backend_tokens: Cache<String, HeaderValue>,
    hasher: KeyHasher,
    passwords: Passwords,
    cache: Arc<AuthCache>,
    throttle: Throttle,
    /// Shared with the tasks that send reset codes after the answer has gone.
    mailer: Arc<mail::Mailer>,
    /// Access tokens that verified before (subject, exp), until their expiry.
    verified_tokens: verified::Remembered<(UserId, i64)>,
    /// API keys seen before and their keyed hashes (the key's state is still looked up).
    key_hashes: verified::Remembered<Arc<str>>,
    /// Keys used since the last flush: id -> time (ms). Written to the store in batches.
    key_uses: Mutex<HashMap<Arc<str>, i64, foldhash::fast::RandomState>>,
}

impl AuthService {
    pub fn new(config: Arc<Config>, store: Store) -> Result<Arc<AuthService>, String> {
        let secrets = secrets::resolve(&config).map_err(|e| e.to_string())?;
        let a = &config.auth;
        let mailer = mail::Mailer::new(config.smtp.as_ref(), config.is_production())?;
        let cache = Arc::new(AuthCache::new(a.cache_ttl, a.stale_if_error));
        cache.listen(&store);
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let service = Arc::new(AuthService {
            signer: Signer::new(secrets.jwt.expose().as_bytes()),
            backend_signer: a
                .backend_jwt_secret
                .as_ref()
                .map(|s| Signer::new(s.expose().as_bytes())),
            backend_tokens: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(a.backend_jwt_ttl / 2)
                .build(),
            hasher: KeyHasher::new(secrets.api_key_pepper.expose().as_bytes()),
            // Leave at least one core to proxied traffic.
            passwords: Passwords::new(cpus.saturating_sub(1).max(1)),
            throttle: Throttle::new(
                a.login_window,
                a.login_max_failures,
                a.login_max_failures_per_ip,
                a.login_account_burst,
                a.login_account_interval,
            ),
            cache,
            mailer: Arc::new(mailer),
            key_uses: Mutex::new(HashMap::default()),
            verified_tokens: Default::default(),
            key_hashes: Default::default(),
            store,
            config,
        });
        let weak = Arc::downgrade(&service);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tick.tick().await;
                let Some(s) = weak.upgrade() else { return };
                s.flush_key_uses().await;
            }
        });
        Ok(service)
    }

    /// Accounts: auth's table, for what the API reads.
    pub fn users(&self) -> crate::store::Users<'_> {
        self.store.users()
    }

    /// API keys, for the owner's list.
    pub fn keys(&self) -> crate::store::ApiKeys<'_> {
        self.store.keys()
    }

    /// Who did what: every administrative action is recorded under its actor.
    pub fn audit_trail(&self) -> crate::store::Audit<'_> {
        self.store.audit_trail()
    }

    /// True when `token` is a validly signed, unexpired refresh token.
    pub fn is_refresh_token(&self, token: &str) -> bool {
        self.signer.verify(token, Kind::Refresh).is_ok()
    }

    pub fn code_minutes(&self) -> u64 {
        self.config.auth.code_ttl.as_secs() / 60
    }

    /// The principal behind the request's credentials, `None` when it carries none.
    /// `query_token` says whether the route accepts `?token=` (image GETs from `<img>` tags).
    pub async fn authenticate(
        &self,
        parts: &Parts,
        query_token: bool,
    ) -> Result<Option<Principal>, Refusal> {
        let result = match self.authenticate_near(parts, query_token) {
            Some(known) => known,
            // Boxed: the store's and the caches' futures stay out of every request's, which
            // is moved whole at each await it passes through.
            None => Box::pin(self.authenticate_inner(parts, query_token)).await,
        };
        let outcome = match &result {
            Ok(None) => "none",
            Ok(Some(_)) => "ok",
            Err(e) if e.kind == RefusalKind::Forbidden => "disabled",
            Err(e) if matches!(e.kind, RefusalKind::Failed | RefusalKind::Unavailable) => "error",
            Err(_) => "invalid",
        };
        crate::telemetry::meters().auth(outcome).increment(1);
        result
    }

    /// The answer of [`AuthService::authenticate`] when it needs no store and no cache
    /// beyond the near answers: no credentials, a refused one, or a caller whose token or key
    /// and account were read within the last second. `None`: ask the caches.
    fn authenticate_near(
        &self,
        parts: &Parts,
        query_token: bool,
    ) -> Option<Result<Option<Principal>, Refusal>> {
        let credential = match credentials::extract(parts, query_token) {
            Ok(Some(credential)) => credential,
            other => return Some(other.map(|_| None)),
        };
        let user_id = match credential {
            Credential::Jwt(token) => self.verify_access(token),
            Credential::ApiKey(key) => {
                let hash = self.key_hashes.get(key, |_| true)?;
                let state = self.cache.key_near(&hash)?;
                self.check_key(&state)
            }
            Credential::ImageCookie(token) => self.verify_image(token),
        };
        let user_id = match user_id {
            Ok(user_id) => user_id,
            Err(refused) => return Some(Err(refused)),
        };
        let user = self.cache.user_near(&user_id)?;
        Some(principal_of(Some(user)).map(Some))
    }

    async fn authenticate_inner(
        &self,
        parts: &Parts,
        query_token: bool,
    ) -> Result<Option<Principal>, Refusal> {
        let Some(credential) = credentials::extract(parts, query_token)? else {
            return Ok(None);
        };
        let user_id = match credential {
            Credential::Jwt(token) => self.verify_access(token)?,
            Credential::ApiKey(key) => self.verify_key(key).await?,
            Credential::ImageCookie(token) => self.verify_image(token)?,
        };
        self.principal(&user_id).await.map(Some)
    }

    /// The image cookie's token: signed by the gate as an image credential, unexpired. Not
    /// remembered with the access tokens, so it can never pass as one.
    fn verify_image(&self, token: &str) -> Result<UserId, Refusal> {
        match self.signer.verify(token, Kind::Image) {
            Ok(c) => Ok(UserId::from(Arc::<str>::from(c.sub))),
            Err(TokenError::Expired) => Err(Refusal::unauthenticated(
                "无效的认证令牌: the image cookie has expired; sign in again",
            )),
            Err(_) => Err(Refusal::unauthenticated(
                "无效的认证令牌: invalid image cookie",
            )),
        }
    }

    /// The image cookie's token for the holder of `access_token` (just issued by a login or a
    /// refresh), and how many seconds it lives: as long as an access token. `None` when the
    /// cookie is turned off.
    pub fn image_token(&self, access_token: &str) -> Option<(String, u64)> {
        if !self.config.auth.image_cookie {
            return None;
        }
        let claims = self.signer.verify(access_token, Kind::Access).ok()?;
        let ttl = self.config.auth.access_ttl;
        let jti = uuid::Uuid::new_v4().to_string();
        let (token, _) = self.signer.issue(&claims.sub, Kind::Image, &jti, ttl, None);
        Some((token, ttl.as_secs()))
    }

    fn verify_access(&self, token: &str) -> Result<UserId, Refusal> {
        // Valid while `exp` is, with the leeway the full verification allows.
        let now = tokens::now_secs();
        if let Some((sub, _)) = self
            .verified_tokens
            .get(token, |(_, exp)| *exp >= now - tokens::LEEWAY)
        {
            return Ok(sub);
        }
        match self.signer.verify(token, Kind::Access) {
            Ok(c) => {
                let sub = UserId::from(Arc::<str>::from(c.sub));
                self.verified_tokens.insert(token, (sub.clone(), c.exp));
                Ok(sub)
            }
            Err(TokenError::Expired) => Err(Refusal::unauthenticated(
                "无效的认证令牌: the access token has expired",
            )),
            Err(TokenError::WrongType) => Err(Refusal::unauthenticated(
                "无效的认证令牌: not an access token",
            )),
            Err(TokenError::Invalid) => Err(Refusal::unauthenticated(
                "无效的认证令牌: invalid access token",
            )),
        }
    }

    async fn verify_key(&self, key: &str) -> Result<UserId, Refusal> {
        if !keys::looks_like_key(key) {
            return Err(Refusal::unauthenticated("invalid API key"));
        }
        let remembered = self.key_hashes.get(key, |_| true);
        let hash = match &remembered {
            Some(hash) => hash.clone(),
            None => self.hasher.hash("api-key", key).into(),
        };
        let Some(state) = self.cache.key(&self.store, &hash).await? else {
            return Err(Refusal::unauthenticated("invalid API key"));
        };
        let user_id = self.check_key(&state)?;
        // Only keys that passed are remembered, so random keys cannot crowd out real ones.
        if remembered.is_none() {
            self.key_hashes.insert(key, hash);
        }
        Ok(user_id)
    }

    /// A known key's owner, if the key is active and unexpired; its use is noted for
    /// `last_used_at`.
    fn check_key(&self, state: &KeyState) -> Result<UserId, Refusal> {
        if !state.active {
            return Err(Refusal::unauthenticated(
                "this API key has been deactivated",
            ));
        }
        let now = crate::store::now_ms();
        if state.expires_at.is_some_and(|t| t <= now) {
            return Err(Refusal::unauthenticated("this API key has expired"));
        }
        self.key_uses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(state.id.clone(), now);
        Ok(state.user_id.clone())
    }

    /// The cached state of a user as a principal: 401 if gone, 403 if disabled.
    pub async fn principal(&self, user_id: &UserId) -> Result<Principal, Refusal> {
        principal_of(self.cache.user(&self.store, user_id).await?)
    }

    /// `Authorization` for the backend: a short-lived HS256 token signed with the backend's own
    /// `JWT_SECRET_KEY`, so a backend run with `ENABLE_AUTH=true` keeps per-user data apart
    /// (API-key callers included). `None` when no backend secret is configured.
    pub async fn backend_authorization(&self, p: &Principal) -> Option<HeaderValue> {
        self.backend_authorization_for(&p.user_id, p.email.as_deref())
            .await
    }

    /// The backend's `Authorization` for the account `user_id`, for the gate's own requests
    /// on its behalf (a task's status); `None` without a backend secret.
    pub async fn backend_authorization_for(
        &self,
        user_id: &str,
        email: Option<&str>,
    ) -> Option<HeaderValue> {
        let signer = self.backend_signer.as_ref()?;
        let ttl = self.config.auth.backend_jwt_ttl;
        let key = format!("{}\u{0}{}", user_id, email.unwrap_or(""));
        // Boxed here, past the check above: without a backend secret nothing is allocated,
        // and with one the cache's large future stays out of every request's.
        Some(
            Box::pin(self.backend_tokens.get_with(key, async {
                let jti = uuid::Uuid::new_v4().to_string();
                let (token, _) = signer.issue(user_id, Kind::Access, &jti, ttl, email);
                HeaderValue::from_str(&format!("Bearer {token}"))
                    .expect("a JWT is a valid header value")
            }))
            .await,
        )
    }

    /// Writes the pending `last_used_at` times of API keys.
    pub async fn flush_key_uses(&self) {
        let uses: Vec<(String, i64)> = {
            let mut map = self.key_uses.lock().unwrap_or_else(|p| p.into_inner());
            map.drain().map(|(id, at)| (id.to_string(), at)).collect()
        };
        if uses.is_empty() {
            return;
        }
        if let Err(e) = self.store.keys().touch(&uses).await {
            tracing::warn!(error = %e, "could not record API key use");
        }
    }
}
