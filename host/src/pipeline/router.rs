//! Which handlers a row change goes to.
//!
//! A handler subscribes to tables (`db.table`, `db.*`) and operations. The
//! router answers "who gets this change" once per table id and operation and
//! caches the answer, so a row costs one map lookup; the table's names are
//! kept with the cached answer because a table id can be reused for another
//! table (a DDL, a restarted server). Adding or removing a handler clears
//! the cache.
//!
//! The cached answer also holds the route's `rowhook_changes_total{table,
//! op}` counter, so counting a routed change is one atomic add: no label is
//! looked up or formatted per row ([`ChangeCounts`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::config::{OpSet, TablePattern};
use crate::decode::Op;
use crate::decode::txn::TableFilter;
use crate::handler_id::HandlerId;
use crate::telemetry::{Counter, MAX_TABLE_LABELS, Registry, names};

/// What one handler subscribes to.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Tables, `db.table` or `db.*`.
    pub tables: Vec<TablePattern>,
    /// Operations.
    pub ops: OpSet,
}

impl Subscription {
    /// Whether a change of `db`.`table` with `op` is subscribed.
    pub fn matches(&self, db: &str, table: &str, op: Op) -> bool {
        self.ops.contains(op) && self.tables.iter().any(|t| t.matches(db, table))
    }
}

/// A cached answer: the handlers of one table id and op, with the names of
/// the table it was computed for.
struct Route {
    db: Arc<str>,
    table: Arc<str>,
    handlers: Arc<[HandlerId]>,
    changes: Counter,
}

/// The handlers' subscriptions, in the order handlers are called.
#[derive(Default)]
pub struct Router {
    subscriptions: Vec<(HandlerId, Subscription)>,
    routes: HashMap<(u64, Op), Route, BuildHasherDefault<RouteHasher>>,
    counts: ChangeCounts,
}

/// The `rowhook_changes_total{table, op}` series, made as routes are first
/// cached: one per table and op for the first [`MAX_TABLE_LABELS`] tables,
/// then `table="other"`.
#[derive(Default)]
pub struct ChangeCounts {
    registry: Option<Registry>,
    tables: HashMap<(String, Op), Counter>,
    named: usize,
}

impl ChangeCounts {
    /// Counts into `registry`.
    pub fn new(registry: &Registry) -> ChangeCounts {
        ChangeCounts {
            registry: Some(registry.clone()),
            ..ChangeCounts::default()
        }
    }

    /// The counter of changes of `db`.`table` with `op` (a detached one
    /// without a registry).
    fn counter(&mut self, db: &str, table: &str, op: Op) -> Counter {
        let Some(registry) = &self.registry else {
            return Counter::detached();
        };
        let name = format!("{db}.{table}");
        let known = self.tables.keys().any(|(t, _)| *t == name);
        let label = if known || self.named < MAX_TABLE_LABELS {
            if !known {
                self.named += 1;
            }
            name
        } else {
            "other".to_owned()
        };
        self.tables
            .entry((label.clone(), op))
            .or_insert_with(|| {
                registry.counter(
                    names::CHANGES,
                    "Row changes of subscribed tables seen, by table and operation.",
                    vec![("table", label), ("op", op.as_str().to_owned())],
                )
            })
            .clone()
    }
}

/// The hasher of the route cache, looked up once per row change: its keys
/// (a table id and an op) come from the binlog, not from anyone who could
/// choose them to collide, so a multiply-and-rotate suffices where the
/// default SipHash costs more than the rest of routing.
#[derive(Default)]
struct RouteHasher(u64);

impl Hasher for RouteHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

impl Router {
    /// A router that counts the changes it routes in `registry`.
    pub fn counting(registry: &Registry) -> Router {
        Router {
            counts: ChangeCounts::new(registry),
            ..Router::default()
        }
    }

    /// Adds `id`'s subscription; it is called after the handlers added
    /// before it. A handler already subscribed keeps its place.
    pub fn add(&mut self, id: HandlerId, subscription: Subscription) {
        match self.subscriptions.iter_mut().find(|(h, _)| *h == id) {
            Some((_, s)) => *s = subscription,
            None => self.subscriptions.push((id, subscription)),
        }
        self.routes.clear();
    }

    /// Removes `id`: no further change routes to it.
    pub fn remove(&mut self, id: &HandlerId) {
        self.subscriptions.retain(|(h, _)| h != id);
        self.routes.clear();
    }

    /// The handlers a change of table `table_id` (`db`.`table`) with `op`
    /// goes to, in call order; empty if nobody subscribed. A change with
    /// handlers is counted.
    pub fn route(&mut self, table_id: u64, db: &str, table: &str, op: Op) -> Arc<[HandlerId]> {
        let key = (table_id, op);
        if let Some(r) = self.routes.get(&key)
            && *r.db == *db
            && *r.table == *table
        {
            if !r.handlers.is_empty() {
                r.changes.inc();
            }
            return r.handlers.clone();
        }
        let handlers: Arc<[HandlerId]> = self.subscribers(db, table, op).into();
        let changes = match handlers.is_empty() {
            true => Counter::detached(),
            false => self.counts.counter(db, table, op),
        };
        if !handlers.is_empty() {
            changes.inc();
        }
        let route = Route {
            db: Arc::from(db),
            table: Arc::from(table),
            handlers: handlers.clone(),
            changes,
        };
        self.routes.insert(key, route);
        handlers
    }

    /// The handlers subscribed to `db`.`table` and `op`, in call order,
    /// without the cache (for rows whose table id cannot be trusted).
    pub fn subscribers(&self, db: &str, table: &str, op: Op) -> Vec<HandlerId> {
        self.subscriptions
            .iter()
            .filter(|(_, s)| s.matches(db, table, op))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The decoder's table filter: the union of all subscriptions, so a
    /// table nobody subscribed to is not even decoded.
    pub fn table_filter(&self) -> TableFilter {
        table_filter(self.subscriptions.iter().flat_map(|(_, s)| s.tables.iter()))
    }
}

/// The table filter that decodes exactly the tables `patterns` name.
pub fn table_filter<'a>(patterns: impl Iterator<Item = &'a TablePattern>) -> TableFilter {
    let list: Vec<String> = patterns.map(ToString::to_string).collect();
    if list.is_empty() {
        // No handler subscribes to anything: decode nothing.
        return TableFilter::parse("\u{0}.\u{0}").expect("valid pattern");
    }
    TableFilter::parse(&list.join(",")).expect("patterns were validated by the config")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(tables: &[&str], ops: OpSet) -> Subscription {
        Subscription {
            tables: tables.iter().map(|t| TablePattern::parse(t).unwrap()).collect(),
            ops,
        }
    }

    const INSERTS: OpSet = OpSet {
        insert: true,
        update: false,
        delete: false,
        snapshot: false,
    };

    fn ids(route: &[HandlerId]) -> Vec<String> {
        route.iter().map(|h| h.name().to_owned()).collect()
    }

    #[test]
    fn routes_by_table_and_op_in_call_order() {
        let mut r = Router::default();
        r.add(HandlerId::new("t", "b"), sub(&["shop.*"], OpSet::ALL));
        r.add(HandlerId::new("t", "a"), sub(&["shop.orders"], INSERTS));
        assert_eq!(ids(&r.route(7, "shop", "orders", Op::Insert)), ["b", "a"]);
        assert_eq!(ids(&r.route(7, "shop", "orders", Op::Delete)), ["b"]);
        assert_eq!(ids(&r.route(8, "shop", "users", Op::Insert)), ["b"]);
        assert!(r.route(9, "crm", "users", Op::Insert).is_empty());
    }

    #[test]
    fn routed_changes_are_counted_by_table_and_op_up_to_the_table_cap() {
        let registry = Registry::new();
        let mut r = Router::counting(&registry);
        r.add(HandlerId::new("t", "a"), sub(&["shop.*"], OpSet::ALL));
        for _ in 0..3 {
            r.route(7, "shop", "orders", Op::Insert);
        }
        r.route(7, "shop", "orders", Op::Delete);
        r.route(9, "crm", "users", Op::Insert);
        for t in 0..MAX_TABLE_LABELS as u64 + 5 {
            r.route(100 + t, "shop", &format!("t{t}"), Op::Update);
        }
        let snap = registry.snapshot();
        let of = |table: &str, op: &str| {
            snap.family(names::CHANGES)
                .filter(|s| s.label("table") == Some(table) && s.label("op") == Some(op))
                .map(|s| s.count())
                .sum::<u64>()
        };
        assert_eq!(of("shop.orders", "insert"), 3);
        assert_eq!(of("shop.orders", "delete"), 1);
        assert_eq!(of("crm.users", "insert"), 0, "nobody subscribed");
        // shop.orders took one of the names: the last six tables are "other".
        assert_eq!(of("other", "update"), 6);
        assert_eq!(snap.sum(names::CHANGES), 3 + 1 + MAX_TABLE_LABELS as u64 + 5);
        let tables: std::collections::BTreeSet<&str> =
            snap.family(names::CHANGES).filter_map(|s| s.label("table")).collect();
        assert_eq!(tables.len(), MAX_TABLE_LABELS + 1);
    }

    #[test]
    fn a_reused_table_id_is_routed_by_its_new_table() {
        let mut r = Router::default();
        r.add(HandlerId::new("t", "orders"), sub(&["shop.orders"], OpSet::ALL));
        assert_eq!(ids(&r.route(7, "shop", "orders", Op::Insert)), ["orders"]);
        // The server restarted: id 7 now names another table.
        assert!(r.route(7, "shop", "audit", Op::Insert).is_empty());
        assert_eq!(ids(&r.route(7, "shop", "orders", Op::Insert)), ["orders"]);
    }

    #[test]
    fn adding_and_removing_a_handler_changes_cached_routes() {
        let mut r = Router::default();
        let a = HandlerId::new("t", "a");
        r.add(a.clone(), sub(&["shop.orders"], OpSet::ALL));
        assert_eq!(ids(&r.route(7, "shop", "orders", Op::Update)), ["a"]);
        r.add(HandlerId::new("u", "b"), sub(&["shop.*"], OpSet::ALL));
        assert_eq!(ids(&r.route(7, "shop", "orders", Op::Update)), ["a", "b"]);
        r.remove(&a);
        assert_eq!(ids(&r.route(7, "shop", "orders", Op::Update)), ["b"]);
        // Added again: called last, once.
        r.add(a, sub(&["shop.orders"], OpSet::ALL));
        assert_eq!(ids(&r.route(7, "shop", "orders", Op::Update)), ["b", "a"]);
    }

    #[test]
    fn the_table_filter_is_the_union_of_subscriptions() {
        let mut r = Router::default();
        let nothing = r.table_filter();
        assert!(!nothing.matches(b"shop", b"orders"));
        r.add(HandlerId::new("t", "a"), sub(&["shop.orders"], OpSet::ALL));
        r.add(HandlerId::new("t", "b"), sub(&["crm.*"], INSERTS));
        let f = r.table_filter();
        assert!(f.matches(b"shop", b"orders"));
        assert!(f.matches(b"crm", b"leads"));
        assert!(!f.matches(b"shop", b"users"));
    }
}
