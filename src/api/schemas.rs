//! Response shapes shared by several endpoints, as the original services returned them.

use serde::Serialize;
use utoipa::ToSchema;

use super::time::{iso, iso_opt};
use crate::store::{ApiKeyRow, UserRow};

#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    pub id: String,
    pub email: String,
    pub username: String,
    pub is_active: bool,
    pub is_superuser: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl From<UserRow> for UserResponse {
    fn from(u: UserRow) -> Self {
        UserResponse {
            is_active: u.is_active,
            is_superuser: u.is_superuser,
            id: u.id.to_string(),
            email: u.email,
            username: u.username,
            created_at: iso(u.created_at),
            updated_at: iso(u.updated_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyResponse {
    pub id: String,
    /// The first 12 characters and `...`.
    pub key_prefix: String,
    pub name: String,
    pub is_active: bool,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
}

impl From<ApiKeyRow> for ApiKeyResponse {
    fn from(k: ApiKeyRow) -> Self {
        ApiKeyResponse {
            is_active: k.is_active,
            id: k.id,
            key_prefix: k.key_prefix,
            name: k.name,
            created_at: iso(k.created_at),
            expires_at: iso_opt(k.expires_at),
            last_used_at: iso_opt(k.last_used_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Message {
    pub message: String,
    pub success: bool,
}

impl Message {
    pub fn ok(message: impl Into<String>) -> Message {
        Message {
            message: message.into(),
            success: true,
        }
    }
}
