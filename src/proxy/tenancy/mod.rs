//! Tenant isolation: no account can see, block or write into another account's patients.
//!
//! The unmodified backend keys its state globally: task ids `main_<patient>_<date>`, upload
//! ids `<patient>_<date>_<ts>`, case locks `<patient>_<date>`, and `/list_tasks` lists
//! everyone's. The gate keeps accounts apart in three ways:
//!
//! - **Namespaces** ([`Namespace`]): every patient name an account sends the backend (a path
//!   parameter, the multipart field) gets the account's namespace in front, so two clinics'
//!   "张三" of the same day are two cases, two task ids, two locks and two folders, whether or
//!   not the backend runs with its own auth. Replies have the namespace taken out again
//!   ([`replies`]), so clients see the names they typed. Superusers work in the backend's own,
//!   un-namespaced names, as an operator would.
//! - **Owners** ([`Owners`]): every id a reply hands out is recorded with its owner, and a
//!   route that names such an id answers anyone else with 404 (not 403: whether someone else's
//!   task exists is not the caller's business). Lists of ids are filtered to the caller's own.
//! - **Safe names** ([`check_segment`], [`multipart`]): names the backend joins into file paths
//!   are single safe path segments, checked in the path and in the multipart body as it streams.

pub mod multipart;
pub mod replies;

use crate::formats::ids::UserId;
use crate::formats::text::every_byte;
use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Refusal;
use crate::store::{Store, now_ms};

/// The largest name, in bytes, the gate lets the backend join into a path (a file name is at
/// most 255 bytes; the namespace takes some of that).
pub const MAX_NAME_BYTES: usize = 200;

/// An account's namespace: the text put in front of the patient names it sends the backend,
/// the account's id and a `~`. Ids are unique, so no two accounts share one, and no id holds a
/// `~`, so a name cannot forge one and replies give it back exactly. Made from the id the
/// cached principal already holds, without copying it (this runs on every poll).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The account's id, or its bytes in hex where the id has anything but letters, digits
    /// and `-` (never, for the gate's own UUIDs).
    id: Arc<str>,
}

impl Namespace {
    pub fn of(user_id: &UserId) -> Namespace {
        let plain = !user_id.is_empty()
            && every_byte(user_id.as_bytes(), |b| {
                b.is_ascii_alphanumeric() || b == b'-'
            });
        let id = if plain {
            user_id.shared()
        } else {
            user_id
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into()
        };
        Namespace { id }
    }

    /// Its length in bytes.
    pub fn text_len(&self) -> usize {
        self.id.len() + 1
    }

    /// Appends the namespace to `out`.
    pub fn push_to(&self, out: &mut String) {
        out.push_str(&self.id);
        out.push('~');
    }

    /// The namespace as text.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.text_len());
        self.push_to(&mut s);
        s
    }

    /// Whether the namespace ends at `tilde`, the index of a `~` in `text`.
    pub fn ends_at(&self, text: &[u8], tilde: usize) -> bool {
        tilde >= self.id.len()
            && text.get(tilde) == Some(&b'~')
            && &text[tilde - self.id.len()..tilde] == self.id.as_bytes()
    }

    /// Whether `s` starts with the namespace.
    pub fn starts(&self, s: &str) -> bool {
        s.len() > self.id.len() && self.ends_at(s.as_bytes(), self.id.len())
    }
}

/// The single-safe-segment rule for a name the backend joins into a file path: not empty, not
/// `.` or `..`, no `/`, `\`, NUL or other control character, at most [`MAX_NAME_BYTES`].
/// Letters of any script pass (Chinese patient names are normal). `Err` names the field.
pub fn check_segment(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value == "." || value == ".." {
        return Err(format!("{field} must not be `{value}`"));
    }
    // Most names are printable ASCII without a separator, seen in one look at their bytes;
    // only a name that fails that is read as characters.
    let plain = every_byte(value.as_bytes(), |b| {
        (b.is_ascii_graphic() || b == b' ') && b != b'/' && b != b'\\'
    });
    let bad = if plain {
        None
    } else {
        value
            .chars()
            .find(|c| *c == '/' || *c == '\\' || c.is_control())
    };
    if let Some(c) = bad {
        return Err(format!(
            "{field} must be a single path segment without `/`, `\\` or control characters (found {c:?})"
        ));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(format!("{field} must be at most {MAX_NAME_BYTES} bytes"));
    }
    Ok(())
}

/// A percent-encoded path segment as the backend will read it, or why it cannot be one.
pub fn decode_segment<'a>(
    field: &str,
    segment: &'a str,
) -> Result<std::borrow::Cow<'a, str>, String> {
    // Most segments hold no escape: they are already the text (a canonical path is UTF-8).
    if !segment.as_bytes().contains(&b'%') {
        return Ok(std::borrow::Cow::Borrowed(segment));
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| format!("{field} is not valid UTF-8"))
}

/// `id` of a kind whose ids begin with one of `prefixes` before the patient name, with the
/// namespace put in front of that name, and the length of the prefix it went after; `None`
/// when the id has none of the prefixes.
pub fn namespaced_id(prefixes: &[String], id: &str, ns: &Namespace) -> Option<(String, usize)> {
    // The longest prefix that fits: `""` (ids that start with the name) fits every id.
    let prefix = prefixes
        .iter()
        .filter(|p| id.starts_with(p.as_str()))
        .max_by_key(|p| p.len())?;
    let mut out = String::with_capacity(id.len() + ns.text_len());
    out.push_str(prefix);
    ns.push_to(&mut out);
    out.push_str(&id[prefix.len()..]);
    Some((out, prefix.len()))
}

/// Who owns the ids the backend handed out, stored (both databases, every replica) and
/// remembered: an id's owner never changes, so a known owner is kept for good (a plain map
/// behind a read lock: a poll every 3 s per open task asks it, and a hit must cost next to
/// nothing); an unknown id is asked of the store each time (another replica may have just
/// recorded it).
pub struct Owners {
    store: Store,
    /// Known owners by kind (a handful, looked through in turn), then id.
    known: std::sync::RwLock<Vec<(String, OwnersById)>>,
}

/// The owner of each known id of one kind. The ids are the backend's, handed out to their
/// owners, and the map is bounded ([`KNOWN_OWNERS`]): a fast hash seeded per process will do
/// (SipHash cost a poll more than the rest of the lookup).
type OwnersById = HashMap<String, Arc<str>, foldhash::fast::RandomState>;

/// Known owners kept at most; past it the map starts again (they are all in the store).
const KNOWN_OWNERS: usize = 200_000;

impl Owners {
    pub fn new(store: Store) -> Owners {
        Owners {
            store,
            known: Default::default(),
        }
    }

    /// `f` of the known owner of `(kind, id)`, under the read lock; `None` if it is not known.
    fn with_known<R>(&self, kind: &str, id: &str, f: impl FnOnce(&str) -> R) -> Option<R> {
        let known = self.known.read().unwrap_or_else(|p| p.into_inner());
        let (_, ids) = known.iter().find(|(k, _)| k == kind)?;
        ids.get(id).map(|owner| f(owner))
    }

    fn remember(&self, kind: &str, id: &str, owner: Arc<str>) {
        let mut known = self.known.write().unwrap_or_else(|p| p.into_inner());
        if known.iter().map(|(_, ids)| ids.len()).sum::<usize>() >= KNOWN_OWNERS {
            known.clear();
        }
        let at = match known.iter().position(|(k, _)| k == kind) {
            Some(at) => at,
            None => {
                known.push((kind.to_string(), HashMap::default()));
                known.len() - 1
            }
        };
        known[at].1.insert(id.to_string(), owner);
    }

    /// Whether `user_id` owns `(kind, id)`, as far as this replica has seen; `None` when it
    /// has not seen the id ([`Owners::owns_stored`] asks the store).
    pub fn known(&self, kind: &str, id: &str, user_id: &UserId) -> Option<bool> {
        self.with_known(kind, id, |owner| owner == user_id.as_str())
    }

    /// Whether `user_id` owns `(kind, id)` by the store's record (remembered when there is
    /// one); 503 when the store cannot say.
    pub async fn owns_stored(
        &self,
        kind: &str,
        id: &str,
        user_id: &UserId,
    ) -> Result<bool, Refusal> {
        match self.store.owners().owner_of(kind, id).await? {
            Some(owner) => {
                let owned = owner == user_id.as_str();
                self.remember(kind, id, owner.into());
                Ok(owned)
            }
            None => Ok(false),
        }
    }

    /// Records `user_id` as the owner of a new id; the first owner of an id stays, so an id
    /// whose owner is known (a case processed again gets the same task id) needs no write.
    pub async fn record(&self, kind: &str, id: &str, user_id: &UserId) -> Result<(), Refusal> {
        if self.with_known(kind, id, |_| ()).is_some() {
            return Ok(());
        }
        let owner = self
            .store
            .owners()
            .record(kind, id, user_id, now_ms())
            .await?;
        self.remember(kind, id, owner.into());
        Ok(())
    }

    /// Of `ids`, those of `kind` that `user_id` owns.
    pub async fn owned_among(
        &self,
        kind: &str,
        user_id: &UserId,
        ids: &[&str],
    ) -> Result<std::collections::HashSet<String>, Refusal> {
        Ok(self.store.owners().owned_among(kind, user_id, ids).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segment_rule() {
        for ok in [
            "张三",
            "Zhang San",
            "20250101",
            "a.b",
            "O'Brien",
            "scan.zip",
        ] {
            assert_eq!(check_segment("f", ok), Ok(()), "{ok}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "a\\b", "a\0b", "a\nb", "\u{85}",
        ] {
            let e = check_segment("patient_name", bad).unwrap_err();
            assert!(e.starts_with("patient_name "), "{e}");
        }
        assert!(check_segment("f", &"x".repeat(MAX_NAME_BYTES + 1)).is_err());
    }

    #[test]
    fn namespaces_are_unique_and_unforgeable() {
        let id =
            crate::formats::ids::UserId::from(String::from("0b8f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"));
        let a = Namespace::of(&id);
        assert_eq!(a.to_text(), "0b8f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b~");
        assert_ne!(
            a,
            Namespace::of(&crate::formats::ids::UserId::from(String::from(
                "0b8f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5c"
            )))
        );
        assert_eq!(
            Namespace::of(&crate::formats::ids::UserId::from(String::from("a/b"))).to_text(),
            "612f62~"
        );
        assert!(a.starts("0b8f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b~x"));
        assert!(!a.starts("0b8f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b"));
        assert!(!a.starts("x0b8f6a2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b~"));
    }

    #[test]
    fn ids_get_the_namespace_before_the_patient_name() {
        let ns = Namespace::of(&crate::formats::ids::UserId::from(String::from("u1")));
        let task = ["main_".to_string(), "cont_".to_string()];
        assert_eq!(
            namespaced_id(&task, "main_张三_20250101", &ns),
            Some(("main_u1~张三_20250101".to_string(), 5))
        );
        assert_eq!(namespaced_id(&task, "other_x", &ns), None);
        let upload = [String::new()];
        assert_eq!(
            namespaced_id(&upload, "p_d_17", &ns),
            Some(("u1~p_d_17".to_string(), 0))
        );
    }
}
