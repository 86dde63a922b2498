//! How the domain's states are spelled in the tables: the schema keeps only TEXT and BIGINT
//! columns (one SQL text for SQLite and PostgreSQL), so a flag is 0/1 and a state is a word.
//! Rows decode them here into `bool` and enums, and nothing above the store compares strings
//! or integers to learn whether a subscription runs or a key is active.

/// A 0/1 column, decoded into `bool` by `#[sqlx(try_from = "Flag")]`.
#[derive(Debug, Clone, Copy, sqlx::Type)]
#[sqlx(transparent)]
pub struct Flag(i64);

impl From<Flag> for bool {
    fn from(f: Flag) -> bool {
        f.0 != 0
    }
}

/// A `bool` as the column stores it.
pub fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// Declares a state column: the enum, its words, and its decoding (an unknown word is a broken
/// row, reported as a decode error, never guessed).
macro_rules! state_column {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// The word stored and shown in the API.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            /// The state a word names, if any (a filter a client sent).
            pub fn parse(word: &str) -> Option<$name> {
                match word {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(word: String) -> Result<$name, String> {
                $name::parse(&word)
                    .ok_or_else(|| format!("`{word}` is not a {}", stringify!($name)))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_column!(
    /// Where a subscription stands.
    SubscriptionStatus {
        /// Made for an order not yet paid.
        Pending = "pending",
        /// Running: its period has begun and renews.
        Active = "active",
        /// Running until its period ends, then not renewed.
        Cancelled = "cancelled",
        /// Over: replaced, run out or refunded.
        Expired = "expired",
        /// Paid for, to begin when what runs before it ends.
        Scheduled = "scheduled",
    }
);

impl SubscriptionStatus {
    /// Active or cancelled: the one subscription whose period is the user's now.
    pub fn is_running(self) -> bool {
        matches!(
            self,
            SubscriptionStatus::Active | SubscriptionStatus::Cancelled
        )
    }
}

state_column!(
    /// Where a refund stands at the provider.
    RefundStatus {
        /// Accepted by the provider, not yet done.
        Requested = "requested",
        /// The money is back with the payer.
        Succeeded = "succeeded",
        /// The provider could not pay it back (a closed account): it needs a person.
        Abnormal = "abnormal",
        /// Closed by the provider without being paid.
        Closed = "closed",
    }
);

state_column!(
    /// Where a payment order stands.
    PaymentStatus {
        /// Created, waiting for the provider's word.
        Pending = "pending",
        /// Paid and applied.
        Completed = "completed",
        /// The provider refused it.
        Failed = "failed",
        /// Closed unpaid.
        Closed = "closed",
        /// Refunded whole.
        Refunded = "refunded",
        /// Refunded in part.
        PartiallyRefunded = "partially_refunded",
    }
);
