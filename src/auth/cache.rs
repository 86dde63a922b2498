//! The principal and API-key caches, so an authenticated request costs no database round trip.
//!
//! Entries live `cache_ttl` (10 s by default, Unkey's "fresh" window) as a backstop. Changes
//! that take rights away (a key deleted or deactivated, a user disabled, deleted, or given a new
//! password) invalidate the entry at once on this replica and, through PostgreSQL
//! `LISTEN/NOTIFY` on the channel `gate_auth`, on every other replica within about a second.
//! Unknown keys are cached too (negative entries, 2 s), so guessing keys does not hammer the
//! database. Concurrent misses of one entry load it once (`try_get_with`).
//!
//! In front of the two caches, what each answered for a present user or key is kept for
//! [`NEAR_MS`] in a plain map ([`super::verified::Remembered`]), stamped with the caches'
//! generation: every invalidation moves the generation on (after the entry left the cache), so
//! an entry stamped before it is never served again. A hit in a `moka` cache costs a clock read
//! of its own, an epoch pin, a read record pushed on a channel and, every so often, its
//! housekeeping run by the caller; the API-key route made two such lookups a request.

use moka::Expiry;
use moka::future::Cache as MokaCache;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::verified::Remembered;
use crate::formats::ids::UserId;
use crate::store::{Store, StoreError};

/// What authorization needs to know about a user.
#[derive(Debug, Clone)]
pub struct UserState {
    pub id: UserId,
    pub email: Arc<str>,
    pub active: bool,
    pub superuser: bool,
    pub identity: super::Identity,
}

/// What authentication needs to know about an API key.
#[derive(Debug, Clone)]
pub struct KeyState {
    pub id: Arc<str>,
    pub user_id: UserId,
    pub active: bool,
    pub expires_at: Option<i64>,
}

const CHANNEL: &str = "gate_auth";
/// How long an answer of the caches is served from the plain map in front of them. It adds
/// at most this to an entry's life (`cache_ttl`, the backstop for a missed notification);
/// invalidations end it at once.
const NEAR_MS: i64 = 1_000;

/// A present user or key as the cache answered it, while the generation it was read in lasts.
struct Near<T> {
    generation: u64,
    until_ms: i64,
    state: Arc<T>,
}

impl<T> Clone for Near<T> {
    fn clone(&self) -> Self {
        Near {
            generation: self.generation,
            until_ms: self.until_ms,
            state: self.state.clone(),
        }
    }
}
const NEGATIVE_TTL: Duration = Duration::from_secs(2);

struct TtlByPresence(Duration);

impl<K, T> Expiry<K, Option<T>> for TtlByPresence {
    fn expire_after_create(&self, _k: &K, v: &Option<T>, _at: Instant) -> Option<Duration> {
        Some(if v.is_some() {
            self.0
        } else {
            NEGATIVE_TTL.min(self.0)
        })
    }
}

/// The caches' maps, hashed by foldhash (seeded per process) rather than SipHash: their keys
/// are ids the gate minted and HMAC digests, which no client chooses, and SipHash of a 36- or
/// 64-byte key cost every authenticated request ~250 instructions per lookup.
type Cache<K, V> = MokaCache<K, V, foldhash::fast::RandomState>;

pub struct AuthCache {
    users: Cache<String, Option<Arc<UserState>>>,
    keys: Cache<String, Option<Arc<KeyState>>>,
    /// The last answer the database gave for each user and key, kept for
    /// `auth.stale_if_error_secs` (5 minutes): what is served to a principal known before an outage while the
    /// database cannot answer (a CDN's stale-if-error). Written on every load, read only then.
    last_users: LastKnown<UserState>,
    last_keys: LastKnown<KeyState>,
    /// Whether the invalidations of the other replicas reach this one now. Off (on PostgreSQL)
    /// from start-up until `LISTEN` runs and from the moment its connection is lost until it
    /// runs again: across such a gap a notification may have been missed, so every lookup asks
    /// the database first; only when the database cannot answer (and so nothing can have been
    /// revoked) is the entry known before the gap used. Emptied when `LISTEN` runs again.
    live: AtomicBool,
    /// The last second's answers for present users and keys, in front of `users` and `keys`.
    near_users: Remembered<Near<UserState>>,
    near_keys: Remembered<Near<KeyState>>,
    /// Moved on by every invalidation, after the entry left the cache: a near answer stamped
    /// with an older generation may predate it and is not served.
    generation: AtomicU64,
}

impl AuthCache {
    /// `stale`: how long the database's last answer is kept for an outage (0: not at all).
    pub fn new(ttl: Duration, stale: Duration) -> AuthCache {
        let stale = stale.max(Duration::from_millis(1));
        AuthCache {
            users: MokaCache::builder()
                .max_capacity(100_000)
                .expire_after(TtlByPresence(ttl))
                .build_with_hasher(Default::default()),
            keys: MokaCache::builder()
                .max_capacity(100_000)
                .expire_after(TtlByPresence(ttl))
                .build_with_hasher(Default::default()),
            last_users: MokaCache::builder()
                .max_capacity(100_000)
                .time_to_live(stale)
                .build_with_hasher(Default::default()),
            last_keys: MokaCache::builder()
                .max_capacity(100_000)
                .time_to_live(stale)
                .build_with_hasher(Default::default()),
            live: AtomicBool::new(true),
            near_users: Remembered::default(),
            near_keys: Remembered::default(),
            generation: AtomicU64::new(0),
        }
    }

    /// The caches' generation now, and the time, for a near lookup.
    fn stamp(&self) -> (u64, i64) {
        (
            self.generation.load(Ordering::Acquire),
            crate::store::now_ms(),
        )
    }

    /// Ends every near answer read before now; called after an entry left a cache.
    fn next_generation(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub async fn user(
        &self,
        store: &Store,
        id: &UserId,
    ) -> Result<Option<Arc<UserState>>, StoreError> {
        if let Some(near) = self.user_near(id) {
            return Ok(Some(near));
        }
        // Boxed: the rest is a second's first request for this user, and inline its futures
        // (moka's, the store's) would be moved with every request's.
        Box::pin(self.user_far(store, id)).await
    }

    /// The hot path of [`AuthCache::user`], without a future: a near answer costs one lookup
    /// in a plain map and no allocation. `None`: ask [`AuthCache::user`].
    pub fn user_near(&self, id: &UserId) -> Option<Arc<UserState>> {
        self.near_answer(&self.near_users, id.as_str(), false)
    }

    /// [`AuthCache::user`] past its near answers.
    async fn user_far(
        &self,
        store: &Store,
        id: &UserId,
    ) -> Result<Option<Arc<UserState>>, StoreError> {
        let lookup = || async { Ok(store.users().by_id(id).await?.map(user_state)) };
        if !self.live() {
            return through_gap(store, &self.last_users, id, lookup).await;
        }
        let (generation, now) = self.stamp();
        if let Some(hit) = self.users.get(id.as_str()).await {
            crate::telemetry::meters().cache(false, true).increment(1);
            keep_near(&self.near_users, id.as_str(), &hit, generation, now);
            return Ok(hit);
        }
        crate::telemetry::meters().cache(false, false).increment(1);
        let loader = store.clone();
        let key = id.to_string();
        let uid = id.clone();
        // Boxed: a miss is rare, and its future would otherwise make every request's larger.
        let last = self.last_users.clone();
        let loaded = Box::pin(self.users.try_get_with(key.clone(), async move {
            let state = loader.users().by_id(&uid).await?.map(user_state);
            last.insert(key, state.clone()).await;
            Ok::<_, StoreError>(state)
        }))
        .await
        .map_err(unshare);
        if let Ok(state) = &loaded {
            keep_near(&self.near_users, id.as_str(), state, generation, now);
        }
        match loaded {
            // The database went away before the listener saw it, or only this lookup failed.
            Err(e @ StoreError::Unavailable(_)) => {
                down_or_again(store, &self.last_users, id, e, lookup).await
            }
            other => other,
        }
    }

    pub async fn key(
        &self,
        store: &Store,
        hash: &str,
    ) -> Result<Option<Arc<KeyState>>, StoreError> {
        if let Some(near) = self.key_near(hash) {
            return Ok(Some(near));
        }
        // Boxed, as in `user`.
        Box::pin(self.key_far(store, hash)).await
    }

    /// The hot path of [`AuthCache::key`], without a future. `None`: ask [`AuthCache::key`].
    pub fn key_near(&self, hash: &str) -> Option<Arc<KeyState>> {
        self.near_answer(&self.near_keys, hash, true)
    }

    /// `map`'s near answer for `key`, counted as a hit of the user or key cache; none across a
    /// gap in the notifications (`live`), when every lookup asks the database first.
    fn near_answer<T>(
        &self,
        map: &Remembered<Near<T>>,
        key: &str,
        of_keys: bool,
    ) -> Option<Arc<T>> {
        if !self.live() {
            return None;
        }
        let (generation, now) = self.stamp();
        let near = near(map, key, generation, now)?;
        crate::telemetry::meters().cache(of_keys, true).increment(1);
        Some(near)
    }

    /// [`AuthCache::key`] past its near answers.
    async fn key_far(
        &self,
        store: &Store,
        hash: &str,
    ) -> Result<Option<Arc<KeyState>>, StoreError> {
        let lookup = || async { Ok(store.keys().by_hash(hash).await?.map(key_state)) };
        if !self.live() {
            return through_gap(store, &self.last_keys, hash, lookup).await;
        }
        let (generation, now) = self.stamp();
        if let Some(hit) = self.keys.get(hash).await {
            crate::telemetry::meters().cache(true, true).increment(1);
            keep_near(&self.near_keys, hash, &hit, generation, now);
            return Ok(hit);
        }
        crate::telemetry::meters().cache(true, false).increment(1);
        let loader = store.clone();
        let key = hash.to_string();
        let last = self.last_keys.clone();
        let loaded = Box::pin(self.keys.try_get_with(key.clone(), async move {
            let state = loader.keys().by_hash(&key).await?.map(key_state);
            last.insert(key, state.clone()).await;
            Ok::<_, StoreError>(state)
        }))
        .await
        .map_err(unshare);
        if let Ok(state) = &loaded {
            keep_near(&self.near_keys, hash, state, generation, now);
        }
        match loaded {
            Err(e @ StoreError::Unavailable(_)) => {
                down_or_again(store, &self.last_keys, hash, e, lookup).await
            }
            other => other,
        }
    }

    /// Drops a user here and tells the other replicas to.
    pub async fn invalidate_user(&self, store: &Store, id: &str) {
        self.users.invalidate(id).await;
        self.last_users.invalidate(id).await;
        self.next_generation();
        publish(store, &format!("u:{id}")).await;
    }

    /// Drops a key here and tells the other replicas to.
    pub async fn invalidate_key(&self, store: &Store, hash: &str) {
        self.keys.invalidate(hash).await;
        self.last_keys.invalidate(hash).await;
        self.next_generation();
        publish(store, &format!("k:{hash}")).await;
    }

    async fn apply(&self, payload: &str) {
        match payload.split_once(':') {
            Some(("u", id)) => {
                self.users.invalidate(id).await;
                self.last_users.invalidate(id).await;
            }
            Some(("k", hash)) => {
                self.keys.invalidate(hash).await;
                self.last_keys.invalidate(hash).await;
            }
            _ => tracing::warn!(payload, "unknown cache invalidation"),
        }
        self.next_generation();
    }

    fn clear(&self) {
        self.users.invalidate_all();
        self.keys.invalidate_all();
        self.next_generation();
    }

    /// On PostgreSQL, applies the other replicas' invalidations until the process ends.
    ///
    /// Every gap in the notification stream is seen: `try_recv` says when the connection was
    /// lost (sqlx's `recv` would reconnect silently, and notifications sent meanwhile would be
    /// lost unseen), the cache is then no longer trusted over the database, and it is trusted
    /// again, emptied, only once `LISTEN` runs on a new connection. Reconnecting starts at once and backs
    /// off to a second.
    pub fn listen(self: &Arc<Self>, store: &Store) {
        if store.postgres_url().is_none() {
            return;
        }
        self.live.store(false, Ordering::Release);
        let store = store.clone();
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            loop {
                let Some(connected) = store.listener().await else {
                    return;
                };
                match connected {
                    Ok(mut listener) => {
                        if listener.listen(CHANNEL).await.is_ok() {
                            let Some(c) = cache.upgrade() else { return };
                            c.clear();
                            c.live.store(true, Ordering::Release);
                            drop(c);
                            backoff = Duration::from_millis(50);
                            loop {
                                let next = listener.try_recv().await;
                                let Some(c) = cache.upgrade() else { return };
                                match next {
                                    Ok(Some(n)) => c.apply(n.payload()).await,
                                    Ok(None) | Err(_) => {
                                        c.live.store(false, Ordering::Release);
                                        store.check_alive().await;
                                        tracing::warn!(
                                            "cache invalidation listener lost its connection: the database is asked first until it listens again"
                                        );
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for cache invalidations")
                    }
                }
                if cache.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        });
    }
}

/// The near answer for `key`, if it was read in this generation less than [`NEAR_MS`] ago.
fn near<T>(map: &Remembered<Near<T>>, key: &str, generation: u64, now: i64) -> Option<Arc<T>> {
    map.get(key, |n| n.generation == generation && n.until_ms > now)
        .map(|n| n.state)
}

/// Keeps a present answer of a cache near, stamped with the generation read before the cache
/// was asked (an invalidation meanwhile makes it stale at once).
fn keep_near<T>(
    map: &Remembered<Near<T>>,
    key: &str,
    state: &Option<Arc<T>>,
    generation: u64,
    now: i64,
) {
    if let Some(state) = state {
        map.insert(
            key,
            Near {
                generation,
                until_ms: now + NEAR_MS,
                state: state.clone(),
            },
        );
    }
}

/// The database's last answer about each user or key.
type LastKnown<T> = Cache<String, Option<Arc<T>>>;

/// A lookup during a gap in the notification stream (`AuthCache::live`): the cache is not
/// trusted, the database is asked, and its answer kept as the last one. When it cannot answer,
/// its last answer holds if it is known down, and [`down_or_again`] decides otherwise.
async fn through_gap<T, F, Fut>(
    store: &Store,
    last: &LastKnown<T>,
    key: &str,
    lookup: F,
) -> Result<Option<Arc<T>>, StoreError>
where
    T: Send + Sync + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Arc<T>>, StoreError>>,
{
    // The breaker's word that the database is down can be 200 ms old when it is back, and
    // another replica may already have written a revocation through it: a new connection is
    // tried first (`Store::reachable`: a refused one fails at once).
    if store.known_down() && !store.reachable().await {
        return stale(last.get(key).await, crate::store::Breaker::refusal());
    }
    match within_gap(lookup()).await {
        Ok(state) => Ok(remember(last, key, state).await),
        Err(e @ StoreError::Unavailable(_)) => down_or_again(store, last, key, e, lookup).await,
        Err(e) => Err(e),
    }
}

/// Keeps the database's answer as its last one, and returns it.
async fn remember<T: Send + Sync + 'static>(
    last: &LastKnown<T>,
    key: &str,
    state: Option<Arc<T>>,
) -> Option<Arc<T>> {
    last.insert(key.to_string(), state.clone()).await;
    state
}

/// A lookup that could not reach the database. Its last answer holds only when the database
/// cannot be reached by a new connection either (the breaker is then opened by its own ping):
/// then nothing can be revoked in it. One that takes a connection is asked again, since
/// another replica may have written a revocation through it meanwhile (right after a restart,
/// this lookup may have met a dead connection of the pool) and the last answer would admit
/// what it revoked.
async fn down_or_again<T, F, Fut>(
    store: &Store,
    last: &LastKnown<T>,
    key: &str,
    e: StoreError,
    lookup: F,
) -> Result<Option<Arc<T>>, StoreError>
where
    T: Send + Sync + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Option<Arc<T>>, StoreError>>,
{
    if !store.reachable().await {
        // Down: the breaker is opened by its own ping, off this request's way.
        let store = store.clone();
        tokio::spawn(async move { store.check_alive().await });
        return stale(last.get(key).await, e);
    }
    Ok(remember(last, key, lookup().await?).await)
}

/// A lookup while the notification stream is broken, given half a second: longer, and the
/// database is taken to be away (its last answer is used), rather than making the request wait
/// out the pool's acquire timeout.
async fn within_gap<T>(
    lookup: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(Duration::from_millis(500), lookup)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the database did not answer within 500 ms".into(),
            ))
        })
}

/// The database's last answer during an outage (counted in `gate_auth_served_stale_total`), or
/// the outage's error when there is none.
fn stale<T>(last: Option<T>, e: StoreError) -> Result<T, StoreError> {
    match last {
        Some(v) => {
            metrics::counter!("gate_auth_served_stale_total").increment(1);
            Ok(v)
        }
        None => Err(e),
    }
}

fn user_state(u: crate::store::UserRow) -> Arc<UserState> {
    Arc::new(UserState {
        active: u.is_active,
        superuser: u.is_superuser,
        identity: super::Identity::new(&u.id, Some(&u.email)),
        id: u.id,
        email: u.email.into(),
    })
}

fn key_state(k: crate::store::ApiKeyRow) -> Arc<KeyState> {
    Arc::new(KeyState {
        active: k.is_active,
        id: k.id.into(),
        user_id: k.user_id,
        expires_at: k.expires_at,
    })
}

async fn publish(store: &Store, payload: &str) {
    if let Err(e) = store.notify(CHANNEL, payload).await {
        tracing::warn!(error = %e, "cache invalidation not sent; other replicas catch up within the cache TTL");
    }
}

fn unshare(e: Arc<StoreError>) -> StoreError {
    match &*e {
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Conflict(m) => StoreError::Conflict(m.clone()),
        StoreError::Other(m) => StoreError::Other(m.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_near_answer_lasts_its_generation_and_a_second() {
        let map: Remembered<Near<u8>> = Remembered::default();
        keep_near(&map, "u1", &Some(Arc::new(7)), 3, 1_000);
        assert_eq!(near(&map, "u1", 3, 1_500).as_deref(), Some(&7));
        assert_eq!(near(&map, "u2", 3, 1_500), None, "another key");
        assert_eq!(near(&map, "u1", 4, 1_500), None, "an invalidation since");
        keep_near(&map, "u1", &Some(Arc::new(7)), 3, 1_000);
        assert_eq!(near(&map, "u1", 3, 1_000 + NEAR_MS), None, "a second later");
        keep_near(&map, "gone", &None, 3, 1_000);
        assert_eq!(
            near(&map, "gone", 3, 1_000),
            None,
            "absent answers stay in the cache"
        );
    }
}
