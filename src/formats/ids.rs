//! The ids the gate passes between its parts, each its own type so that a user id cannot be
//! handed where a request id or a quota key belongs (zero2prod's `SubscriberEmail::parse` is
//! the model: text becomes one of these only by being parsed or by being minted here).
//!
//! They are cheap to clone (`Arc<str>`: a principal's id is copied into every request it makes)
//! and read as `&str` where text is needed (SQL parameters, JSON, log fields).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Declares a text id: the newtype, its `&str` views, `Display` and the conversion sqlx's
/// `#[sqlx(try_from = "String")]` decodes rows with (what the store wrote is trusted).
macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The text, shared (no copy).
            pub fn shared(&self) -> Arc<str> {
                self.0.clone()
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl From<String> for $name {
            /// Rows: the store holds only ids the gate wrote.
            fn from(s: String) -> Self {
                $name(s.into())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                &*self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                &*self.0 == *other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
    };
}

text_id!(
    /// An account: a UUID the gate minted when the account was made.
    UserId
);

text_id!(
    /// One request through the gate: a UUID minted when it arrived, the key of its usage row,
    /// so each charge is counted once.
    RequestId
);

text_id!(
    /// A `[[quota_type]]` key of `proxy.toml` (`api_calls_full_process`): what a balance, a
    /// plan limit and a usage row are counted in.
    QuotaKey
);

impl From<Arc<str>> for UserId {
    /// An id the gate vouches for: a token's `sub` whose signature it checked.
    fn from(s: Arc<str>) -> Self {
        UserId(s)
    }
}

impl UserId {
    /// A new account's id.
    pub fn mint() -> UserId {
        UserId(uuid::Uuid::new_v4().to_string().into())
    }

    /// An id a client sent (a path parameter, a token's `sub`): a UUID in its hyphenated form,
    /// or nothing. Anything else cannot name an account, so callers answer as for an unknown one.
    pub fn parse(text: &str) -> Option<UserId> {
        uuid::Uuid::try_parse(text)
            .ok()
            .filter(|u| u.hyphenated().to_string() == text.to_ascii_lowercase())
            .map(|_| UserId(text.into()))
    }
}

/// A new id for a row written at a high rate (a request, a usage row): a UUIDv7, whose first
/// 48 bits are the time in milliseconds and the other 74 random. Rows keyed by such ids are
/// added at the end of their index, not at a random page of it: a random UUIDv4 key dirties a
/// different B-tree page per row, which both databases then write out whole (SQLite's WAL,
/// PostgreSQL's full-page images after each checkpoint), and that was most of what a batch
/// of charges cost. The time in it is no secret: the reply's `Date` tells the same.
pub fn time_ordered() -> uuid::Uuid {
    uuid::Uuid::new_v7(uuid::Timestamp::now(uuid::NoContext))
}

impl RequestId {
    /// A new request's id.
    pub fn mint() -> RequestId {
        RequestId(time_ordered().to_string().into())
    }

    /// A request id as the gate spelled it (a header value it minted).
    pub fn from_minted(text: &str) -> RequestId {
        RequestId(text.into())
    }
}

impl QuotaKey {
    /// A key as `proxy.toml` or a client names it: `a-z`, `0-9` and `_`, at least one. Whether
    /// a type by that key is declared is for billing to say.
    pub fn parse(text: &str) -> Result<QuotaKey, String> {
        let ok = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(QuotaKey(text.into()))
        } else {
            Err(format!(
                "`{text}` must be lowercase letters, digits and `_`"
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_id_is_a_hyphenated_uuid() {
        let id = UserId::mint();
        assert_eq!(UserId::parse(&id), Some(id.clone()));
        assert_eq!(
            UserId::parse(&id.to_uppercase()).as_deref(),
            Some(&*id.to_uppercase())
        );
        assert_eq!(UserId::parse("../etc"), None);
        assert_eq!(UserId::parse(&id.replace('-', "")), None);
        assert_eq!(UserId::parse(""), None);
    }

    #[test]
    fn a_quota_key_is_lowercase_words() {
        assert!(QuotaKey::parse("api_calls_full_process").is_ok());
        assert!(QuotaKey::parse("").is_err());
        assert!(QuotaKey::parse("Runs").is_err());
        assert!(QuotaKey::parse("a-b").is_err());
    }
}
