//! The stable identity of a configured handler: its tenant and its name.
//!
//! Routes, buffered messages, dead letters and reloads refer to a handler
//! by its [`HandlerId`], never by its place in a list, so handlers can be
//! added and removed while rowhook runs without the others' references
//! going stale.

use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

/// A handler's tenant and name. Cloning it is one reference-count
/// increment; hashing it costs one `u64` (computed once, at creation).
#[derive(Clone)]
pub struct HandlerId(Arc<Key>);

struct Key {
    tenant: String,
    name: String,
    /// `tenant/name`.
    key: String,
    hash: u64,
}

impl HandlerId {
    /// The id of handler `name` of `tenant`.
    pub fn new(tenant: &str, name: &str) -> HandlerId {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (tenant, name).hash(&mut h);
        HandlerId(Arc::new(Key {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            key: format!("{tenant}/{name}"),
            hash: h.finish(),
        }))
    }

    /// The tenant the handler belongs to.
    pub fn tenant(&self) -> &str {
        &self.0.tenant
    }

    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// `tenant/name`: what the store keys the handler's state and held
    /// changes by, so that a handler's state belongs to its tenant (tenant
    /// and handler names hold no `/`).
    pub fn key(&self) -> &str {
        &self.0.key
    }
}

impl PartialEq for HandlerId {
    fn eq(&self, other: &HandlerId) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.hash == other.0.hash && self.0.tenant == other.0.tenant && self.0.name == other.0.name)
    }
}

impl Eq for HandlerId {}

impl Hash for HandlerId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.hash);
    }
}

impl PartialOrd for HandlerId {
    fn partial_cmp(&self, other: &HandlerId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for HandlerId {
    fn cmp(&self, other: &HandlerId) -> std::cmp::Ordering {
        (self.tenant(), self.name()).cmp(&(other.tenant(), other.name()))
    }
}

impl fmt::Debug for HandlerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant(), self.name())
    }
}

/// `tenant/name`.
impl fmt::Display for HandlerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// A hasher for maps keyed by [`HandlerId`]: the id's hash is already
/// computed, so it is passed through.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `HandlerId`; anything else still hashes.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A `HashMap` keyed by [`HandlerId`].
pub type IdMap<V> = std::collections::HashMap<HandlerId, V, BuildHasherDefault<IdHasher>>;

/// Which tenant each running handler belongs to, by name: what the admin
/// API asks before it lets a tenant's token touch a handler. Replaced
/// whole when handlers are deployed; read from any thread.
#[derive(Clone, Default)]
pub struct Roster(Arc<std::sync::RwLock<std::collections::BTreeMap<String, String>>>);

impl Roster {
    /// A roster of `handlers` (name, tenant).
    pub fn of(handlers: impl IntoIterator<Item = (String, String)>) -> Roster {
        let r = Roster::default();
        r.set(handlers);
        r
    }

    /// Replaces the roster with `handlers` (name, tenant).
    pub fn set(&self, handlers: impl IntoIterator<Item = (String, String)>) {
        let fresh = handlers.into_iter().collect();
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
    }

    /// The tenant of handler `name`, if it runs.
    pub fn tenant_of(&self, name: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The names of `tenant`'s handlers.
    pub fn handlers_of(&self, tenant: &str) -> Vec<String> {
        let map = self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter()
            .filter(|(_, t)| *t == tenant)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_equal_by_tenant_and_name() {
        let a = HandlerId::new("shop", "orders");
        assert_eq!(a, a.clone());
        assert_eq!(a, HandlerId::new("shop", "orders"));
        assert_ne!(a, HandlerId::new("billing", "orders"));
        assert_ne!(a, HandlerId::new("shop", "order"));
        // The pair, not the joined text: no tenant/name split collides.
        assert_ne!(HandlerId::new("a/b", "c"), HandlerId::new("a", "b/c"));
        assert_eq!(a.to_string(), "shop/orders");
    }

    #[test]
    fn a_map_finds_an_equal_id_made_apart() {
        let mut map: IdMap<u32> = IdMap::default();
        map.insert(HandlerId::new("t", "a"), 1);
        map.insert(HandlerId::new("t", "b"), 2);
        assert_eq!(map.get(&HandlerId::new("t", "a")), Some(&1));
        assert_eq!(map.get(&HandlerId::new("t", "b")), Some(&2));
        assert_eq!(map.get(&HandlerId::new("u", "a")), None);
    }
}
