//! Sessions: login, refresh with rotation and reuse detection, logout.
//!
//! Each login starts a refresh-token family. A refresh exchanges the token for a new pair and
//! marks it rotated. Presenting a rotated token again is normal within a few seconds (browsers
//! fire two refreshes at once on page load) and gets a fresh pair of the same family; later, or
//! once its successor has itself been used (it is then at least two generations old), it means
//! the token was copied, and the whole family is revoked.

use serde::Serialize;
use std::net::IpAddr;

use super::tokens::Kind;
use super::{AuthService, Principal};
use crate::error::Refusal;
use crate::formats::ids::UserId;
use crate::store::{Rotation, now_ms};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    /// Always `bearer`.
    pub token_type: &'static str,
}

fn invalid_refresh() -> Refusal {
    Refusal::unauthenticated("无效的刷新令牌: invalid or expired refresh token")
}

impl AuthService {
    pub async fn login(
        &self,
        login: &str,
        password: &str,
        ip: Option<IpAddr>,
    ) -> Result<TokenPair, Refusal> {
        let login = login.trim();
        let user = self.store.users().by_login(login).await?;
        // The account whatever login names it; a login no account has is counted as typed.
        let account = user
            .as_ref()
            .map_or_else(|| login.to_lowercase(), |u| u.id.to_string());
        let attempt = self.throttle.attempt(&self.store, &account, ip).await?;
        let ok = self
            .passwords
            .verify(password, user.as_ref().map(|u| u.hashed_password.as_str()))
            .await?;
        // A disabled account answers as a wrong password does: the answer must not tell a
        // guesser that the password was right.
        let user = match (ok, user) {
            (true, Some(u)) if u.is_active => u,
            _ => {
                return Err(Refusal::unauthenticated(
                    "用户名或密码错误: wrong username/email or password",
                ));
            }
        };
        self.throttle.succeeded(&self.store, attempt).await?;
        if self.config.auth.require_email_verification && !user.email_verified {
            return Err(Refusal::forbidden("邮箱未验证: verify your email first"));
        }
        let family = uuid::Uuid::new_v4().to_string();
        let jti = uuid::Uuid::new_v4().to_string();
        self.issue_pair(&user.id, &user.email, &family, jti).await
    }

    async fn issue_pair(
        &self,
        user_id: &UserId,
        email: &str,
        family: &str,
        jti: String,
    ) -> Result<TokenPair, Refusal> {
        let a = &self.config.auth;
        let (access, _) = self.signer.issue(
            user_id,
            Kind::Access,
            &uuid::Uuid::new_v4().to_string(),
            a.access_ttl,
            Some(email),
        );
        let (refresh, exp) = self
            .signer
            .issue(user_id, Kind::Refresh, &jti, a.refresh_ttl, None);
        let hash = self.hasher.hash("refresh", &refresh);
        self.store
            .refresh_tokens()
            .insert(&jti, user_id, family, &hash, exp * 1000)
            .await?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: refresh,
            token_type: "bearer",
        })
    }

    pub async fn refresh(&self, token: &str) -> Result<TokenPair, Refusal> {
        let claims = self
            .signer
            .verify(token, Kind::Refresh)
            .map_err(|_| invalid_refresh())?;
        let hash = self.hasher.hash("refresh", token);
        let successor = uuid::Uuid::new_v4().to_string();
        let (family, jti) = match self
            .store
            .refresh_tokens()
            .rotate(&claims.jti, &hash, &successor)
            .await?
        {
            // The new refresh token's id is the one the rotated row names as its successor.
            Rotation::Rotated(row) => (row.family_id, successor),
            Rotation::NotRotated(None) => return Err(invalid_refresh()),
            Rotation::NotRotated(Some(row)) => {
                if row.revoked_at.is_some() {
                    return Err(Refusal::unauthenticated(
                        "无效的刷新令牌: this session was signed out",
                    ));
                }
                let grace = self.config.auth.refresh_reuse_grace.as_millis() as i64;
                let within_grace = row.rotated_at.is_some_and(|t| now_ms() - t <= grace);
                // The grace is for concurrent refreshes of the newest token; a token whose
                // successor has itself been used is an old copy, in the window or not.
                let successor_used = match &row.replaced_by {
                    Some(next) => self.store.refresh_tokens().rotated(next).await?,
                    None => false,
                };
                if !within_grace || successor_used {
                    let n = self
                        .store
                        .refresh_tokens()
                        .revoke_family(&row.family_id)
                        .await?;
                    tracing::warn!(user_id = %row.user_id, revoked = n, "refresh token reused: session family revoked");
                    return Err(Refusal::unauthenticated(
                        "无效的刷新令牌: this refresh token was already used; the session has been signed out",
                    ));
                }
                if self
                    .store
                    .refresh_tokens()
                    .family_revoked(&row.family_id)
                    .await?
                {
                    return Err(Refusal::unauthenticated(
                        "无效的刷新令牌: this session was signed out",
                    ));
                }
                (row.family_id, uuid::Uuid::new_v4().to_string())
            }
        };
        let user = self
            .store
            .users()
            .by_id(&UserId::from(claims.sub.clone()))
            .await?;
        let Some(user) = user.filter(|u| u.is_active) else {
            return Err(Refusal::unauthenticated(
                "用户不存在或已被禁用: the account is gone or disabled",
            ));
        };
        self.issue_pair(&user.id, &user.email, &family, jti).await
    }

    /// Revokes the family of `refresh_token`; with only an access token, every session of
    /// that user (the client gave no way to tell which session it is).
    pub async fn logout(
        &self,
        refresh_token: Option<&str>,
        principal: Option<&Principal>,
    ) -> Result<(), Refusal> {
        if let Some(token) = refresh_token {
            let claims = self
                .signer
                .verify(token, Kind::Refresh)
                .map_err(|_| invalid_refresh())?;
            let hash = self.hasher.hash("refresh", token);
            if let Rotation::NotRotated(Some(row)) | Rotation::Rotated(row) = self
                .store
                .refresh_tokens()
                .rotate(&claims.jti, &hash, "logout")
                .await?
            {
                self.store
                    .refresh_tokens()
                    .revoke_family(&row.family_id)
                    .await?;
            }
            return Ok(());
        }
        match principal {
            Some(p) => {
                self.store
                    .refresh_tokens()
                    .revoke_all_of(&p.user_id)
                    .await?;
                Ok(())
            }
            None => Err(Refusal::unauthenticated(
                "send the refresh token (or an access token) to log out",
            )),
        }
    }
}
