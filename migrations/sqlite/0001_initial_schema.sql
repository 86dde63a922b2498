-- The whole data model of DESIGN.md. Types are TEXT / BIGINT only (flags are 0/1: the Any driver
-- cannot decode SQLite booleans), so one SQL text
-- serves SQLite and PostgreSQL through sqlx's Any driver: ids are UUID strings, times are Unix
-- milliseconds, money is integer fen, quota amounts are integers (-1 = unlimited).

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE,          -- stored lower-cased
    username        TEXT NOT NULL UNIQUE,
    hashed_password TEXT NOT NULL,                 -- argon2id PHC string
    is_active       BIGINT NOT NULL DEFAULT 1,
    is_superuser    BIGINT NOT NULL DEFAULT 0,
    email_verified  BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_prefix   TEXT NOT NULL,                    -- display only, e.g. "sk_live_abcd..."
    key_hash     TEXT NOT NULL UNIQUE,             -- keyed SHA-256 of the whole key, hex
    name         TEXT NOT NULL,
    is_active    BIGINT NOT NULL DEFAULT 1,
    last_used_at BIGINT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT
);
CREATE INDEX api_keys_user ON api_keys(user_id);

CREATE TABLE refresh_tokens (
    id          TEXT PRIMARY KEY,                  -- the token's jti
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    family_id   TEXT NOT NULL,                     -- every rotation of one login shares it
    token_hash  TEXT NOT NULL UNIQUE,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    rotated_at  BIGINT,                            -- when it was exchanged for a successor
    replaced_by TEXT,                              -- the successor's id
    revoked_at  BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens(user_id);

CREATE TABLE email_verification_codes (
    email       TEXT NOT NULL,
    purpose     TEXT NOT NULL,                     -- "register", "change_email"
    code_hash   TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    verified_at BIGINT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (email, purpose)
);

CREATE TABLE quota_types (
    key         TEXT PRIMARY KEY,                  -- e.g. api_calls_full_process
    name        TEXT NOT NULL,
    unit        TEXT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE TABLE subscription_plans (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    description   TEXT NOT NULL DEFAULT '',
    price_fen     BIGINT NOT NULL,
    currency      TEXT NOT NULL DEFAULT 'CNY',
    billing_cycle TEXT NOT NULL DEFAULT 'monthly', -- monthly | yearly | lifetime
    features      TEXT NOT NULL DEFAULT '{}',      -- JSON object
    is_active     BIGINT NOT NULL DEFAULT 1,
    is_default    BIGINT NOT NULL DEFAULT 0,  -- the free plan every new user gets
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE plan_quotas (
    plan_id      TEXT NOT NULL REFERENCES subscription_plans(id) ON DELETE CASCADE,
    quota_type   TEXT NOT NULL REFERENCES quota_types(key),
    limit_amount BIGINT NOT NULL,                  -- -1 = unlimited
    PRIMARY KEY (plan_id, quota_type)
);

CREATE TABLE user_subscriptions (
    id                   TEXT PRIMARY KEY,
    user_id              TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    plan_id              TEXT NOT NULL REFERENCES subscription_plans(id),
    status               TEXT NOT NULL,            -- pending | active | cancelled | expired
    current_period_start BIGINT,
    current_period_end   BIGINT,
    auto_renew           BIGINT NOT NULL DEFAULT 1,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX user_subscriptions_user ON user_subscriptions(user_id, status);

-- The row the reserve statement targets: one per user and quota type.
CREATE TABLE quota_balances (
    user_id      TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    quota_type   TEXT NOT NULL REFERENCES quota_types(key),
    limit_amount BIGINT NOT NULL,                  -- -1 = unlimited
    used_amount  BIGINT NOT NULL DEFAULT 0,
    period_start BIGINT NOT NULL,
    period_end   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (user_id, quota_type),
    CHECK (used_amount >= 0),
    CHECK (limit_amount < 0 OR used_amount <= limit_amount)
);

-- One row per charge, keyed by the request id, so each is counted exactly once.
CREATE TABLE usage_logs (
    id         TEXT PRIMARY KEY,
    request_id TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    quota_type TEXT NOT NULL,
    amount     BIGINT NOT NULL,
    endpoint   TEXT NOT NULL,
    method     TEXT NOT NULL,
    state      TEXT NOT NULL,                      -- reserved | committed | refunded
    metadata   TEXT NOT NULL DEFAULT '{}',         -- JSON object
    created_at BIGINT NOT NULL,
    settled_at BIGINT
);
CREATE INDEX usage_logs_user ON usage_logs(user_id, created_at);
CREATE INDEX usage_logs_type ON usage_logs(quota_type, created_at);

CREATE TABLE payment_transactions (
    id                TEXT PRIMARY KEY,
    order_no          TEXT NOT NULL UNIQUE,        -- out_trade_no, at most 32 characters
    user_id           TEXT NOT NULL REFERENCES users(id),
    plan_id           TEXT NOT NULL REFERENCES subscription_plans(id),
    subscription_id   TEXT REFERENCES user_subscriptions(id),
    amount_fen        BIGINT NOT NULL,
    refunded_fen      BIGINT NOT NULL DEFAULT 0,
    currency          TEXT NOT NULL,
    payment_method    TEXT NOT NULL,               -- alipay | wechat | sandbox
    provider_trade_no TEXT,
    status            TEXT NOT NULL,               -- pending | completed | failed | closed | refunded
    description       TEXT NOT NULL DEFAULT '',
    payment_url       TEXT,
    qr_code           TEXT,
    extra_data        TEXT NOT NULL DEFAULT '{}',  -- JSON object
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    paid_at           BIGINT
);
CREATE INDEX payment_transactions_user ON payment_transactions(user_id, created_at);
CREATE INDEX payment_transactions_status ON payment_transactions(status, created_at);

-- A redelivered notification finds its event id here and changes nothing.
CREATE TABLE webhook_events (
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    order_no    TEXT,
    outcome     TEXT NOT NULL,                     -- applied | duplicate | rejected
    detail      TEXT NOT NULL DEFAULT '',
    received_at BIGINT NOT NULL,
    UNIQUE (provider, event_id)
);

CREATE TABLE audit_log (
    id         TEXT PRIMARY KEY,
    actor_id   TEXT,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL DEFAULT '',
    detail     TEXT NOT NULL DEFAULT '{}',         -- JSON object
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log(created_at);
