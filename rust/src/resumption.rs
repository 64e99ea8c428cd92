//! Client session resumption for the rustls engine: one bounded cache per client context, keyed
//! by (server name, port), and the sessions a connection received as an opaque Python object.
//!
//! rustls keys its own cache by server name only and calls the store with nothing else, so every
//! connection gets its own store (`ConnStore`, in a per-connection copy of the `ClientConfig`:
//! a few reference counts) that knows the connection's key. What the connection receives goes
//! into its `SessionBag`; the context's cache lists the bags per key (newest last) and takes from
//! them. The bag is also what `Connection`s hand to Python (`ClientSession`): offering it to a new
//! connection resumes exactly that session (the `ssl` bridge's `session=`), cache or not.
//!
//! Rules kept from rustls' `ClientSessionMemoryCache`: a TLS 1.3 ticket is used at most once
//! (rustls' values cannot be copied, and single use keeps connections unlinkable); a TLS 1.2
//! session may be reused until the server refuses it; at most 8 tickets per bag. The cache holds
//! `MAX_SERVERS` keys and `MAX_BAGS` bags per key, forgetting the least recently used.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::NamedGroup;
use rustls_pki_types::ServerName;

/// Servers (name, port) a client context remembers.
pub const MAX_SERVERS: usize = 128;
/// Connections per server whose sessions are kept.
const MAX_BAGS: usize = 4;
/// TLS 1.3 tickets kept from one connection (servers send 1 to 4).
const MAX_TICKETS: usize = 8;

/// The cache key: the server name as verified (lower case) and the port, when known.
pub type Key = (String, Option<u16>);

/// Identifies the client context a session belongs to (sessions never cross contexts).
static NEXT_ORIGIN: AtomicU64 = AtomicU64::new(1);

pub fn new_origin() -> u64 {
    NEXT_ORIGIN.fetch_add(1, Ordering::Relaxed)
}

#[derive(Default)]
struct BagInner {
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// What one connection received from its server: the TLS 1.2 session and TLS 1.3 tickets.
pub struct SessionBag {
    key: Key,
    origin: u64,
    inner: Mutex<BagInner>,
}

impl SessionBag {
    pub fn new(key: Key, origin: u64) -> Self {
        SessionBag {
            key,
            origin,
            inner: Mutex::new(BagInner::default()),
        }
    }

    fn is_empty(&self) -> bool {
        let inner = self.inner.lock();
        inner.tls12.is_none() && inner.tls13.is_empty()
    }

    fn take_tls13(&self) -> Option<Tls13ClientSessionValue> {
        self.inner.lock().tls13.pop_back()
    }

    fn tls12(&self) -> Option<Tls12ClientSessionValue> {
        self.inner.lock().tls12.clone()
    }

    fn remove_tls12(&self) {
        self.inner.lock().tls12 = None;
    }

    fn counts(&self) -> (bool, usize) {
        let inner = self.inner.lock();
        (inner.tls12.is_some(), inner.tls13.len())
    }
}

struct Entry {
    kx_hint: Option<NamedGroup>,
    bags: VecDeque<Arc<SessionBag>>,
}

#[derive(Default)]
struct Servers {
    map: HashMap<Key, Entry>,
    /// Keys, least recently used first.
    order: VecDeque<Key>,
}

impl Servers {
    fn touch(&mut self, key: &Key) {
        if let Some(pos) = self.order.iter().position(|k| k == key) {
            if let Some(k) = self.order.remove(pos) {
                self.order.push_back(k);
            }
        }
    }

    fn entry(&mut self, key: &Key) -> &mut Entry {
        if self.map.contains_key(key) {
            self.touch(key);
        } else {
            while self.map.len() >= MAX_SERVERS {
                match self.order.pop_front() {
                    Some(old) => {
                        self.map.remove(&old);
                    }
                    None => break,
                }
            }
            self.order.push_back(key.clone());
            self.map.insert(
                key.clone(),
                Entry {
                    kx_hint: None,
                    bags: VecDeque::new(),
                },
            );
        }
        self.map.get_mut(key).expect("inserted above")
    }
}

/// A client context's session cache.
#[derive(Default)]
pub struct SessionCache {
    servers: Mutex<Servers>,
}

impl SessionCache {
    fn set_kx_hint(&self, key: &Key, group: NamedGroup) {
        self.servers.lock().entry(key).kx_hint = Some(group);
    }

    fn kx_hint(&self, key: &Key) -> Option<NamedGroup> {
        self.servers.lock().map.get(key).and_then(|e| e.kx_hint)
    }

    /// List `bag` under its key (newest last) when it received something. Lock order: the
    /// servers, then a bag (never the other way round).
    fn remember(&self, bag: &Arc<SessionBag>) {
        let mut servers = self.servers.lock();
        let entry = servers.entry(&bag.key);
        entry.bags.retain(|b| !b.is_empty());
        if entry.bags.iter().any(|b| Arc::ptr_eq(b, bag)) {
            return;
        }
        if entry.bags.len() >= MAX_BAGS {
            entry.bags.pop_front();
        }
        entry.bags.push_back(bag.clone());
    }

    fn take_tls13(&self, key: &Key) -> Option<Tls13ClientSessionValue> {
        let mut servers = self.servers.lock();
        let entry = servers.map.get_mut(key)?;
        let found = entry.bags.iter().rev().find_map(|b| b.take_tls13());
        entry.bags.retain(|b| !b.is_empty());
        found
    }

    fn tls12(&self, key: &Key) -> Option<Tls12ClientSessionValue> {
        let servers = self.servers.lock();
        servers
            .map
            .get(key)?
            .bags
            .iter()
            .rev()
            .find_map(|b| b.tls12())
    }

    fn remove_tls12(&self, key: &Key) {
        let mut servers = self.servers.lock();
        if let Some(entry) = servers.map.get_mut(key) {
            for bag in &entry.bags {
                bag.remove_tls12();
            }
            entry.bags.retain(|b| !b.is_empty());
        }
    }

    pub fn clear(&self) {
        let mut servers = self.servers.lock();
        servers.map.clear();
        servers.order.clear();
    }
}

/// The store of one client connection (see the module docs).
pub struct ConnStore {
    key: Key,
    /// The context's cache; None when the context has resumption off.
    cache: Option<Arc<SessionCache>>,
    /// What this connection receives.
    bag: Arc<SessionBag>,
    /// A session the caller asked to resume (then the cache is not consulted).
    offered: Option<Arc<SessionBag>>,
}

impl ConnStore {
    pub fn new(
        key: Key,
        origin: u64,
        cache: Option<Arc<SessionCache>>,
        offered: Option<Arc<SessionBag>>,
    ) -> Self {
        ConnStore {
            bag: Arc::new(SessionBag::new(key.clone(), origin)),
            key,
            cache,
            offered,
        }
    }

    pub fn bag(&self) -> Arc<SessionBag> {
        self.bag.clone()
    }

    fn received(&self) {
        if let Some(cache) = &self.cache {
            cache.remember(&self.bag);
        }
    }
}

impl std::fmt::Debug for ConnStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnStore")
            .field("key", &self.key)
            .field("cache", &self.cache.is_some())
            .finish()
    }
}

impl ClientSessionStore for ConnStore {
    fn set_kx_hint(&self, _: ServerName<'static>, group: NamedGroup) {
        if let Some(cache) = &self.cache {
            cache.set_kx_hint(&self.key, group);
        }
    }

    fn kx_hint(&self, _: &ServerName<'_>) -> Option<NamedGroup> {
        self.cache.as_ref()?.kx_hint(&self.key)
    }

    fn set_tls12_session(&self, _: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.bag.inner.lock().tls12 = Some(value);
        self.received();
    }

    fn tls12_session(&self, _: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        match (&self.offered, &self.cache) {
            (Some(offered), _) => offered.tls12(),
            (None, Some(cache)) => cache.tls12(&self.key),
            (None, None) => None,
        }
    }

    fn remove_tls12_session(&self, _: &ServerName<'static>) {
        if let Some(offered) = &self.offered {
            offered.remove_tls12();
        }
        if let Some(cache) = &self.cache {
            cache.remove_tls12(&self.key);
        }
    }

    fn insert_tls13_ticket(&self, _: ServerName<'static>, value: Tls13ClientSessionValue) {
        {
            let mut inner = self.bag.inner.lock();
            if inner.tls13.len() >= MAX_TICKETS {
                inner.tls13.pop_front();
            }
            inner.tls13.push_back(value);
        }
        self.received();
    }

    fn take_tls13_ticket(&self, _: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        match (&self.offered, &self.cache) {
            (Some(offered), _) => offered.take_tls13(),
            (None, Some(cache)) => cache.take_tls13(&self.key),
            (None, None) => None,
        }
    }
}

/// The sessions one client connection received: offer it to a new connection of the same
/// context to resume (TLS 1.3 tickets are used once each; a TLS 1.2 session until refused).
#[pyclass(frozen, name = "ClientSession", module = "unitls._native")]
pub struct ClientSession {
    pub bag: Arc<SessionBag>,
}

impl ClientSession {
    pub fn origin(&self) -> u64 {
        self.bag.origin
    }

    pub fn server_name(&self) -> &str {
        &self.bag.key.0
    }
}

#[pymethods]
impl ClientSession {
    /// The server name the session was made with.
    #[getter(server_name)]
    fn py_server_name(&self) -> &str {
        &self.bag.key.0
    }

    /// The server port the session was made with (None when the connection did not say).
    #[getter]
    fn port(&self) -> Option<u16> {
        self.bag.key.1
    }

    /// Whether the session can still be offered (it holds a TLS 1.2 session or a ticket).
    #[getter]
    fn resumable(&self) -> bool {
        !self.bag.is_empty()
    }

    fn __repr__(&self) -> String {
        let (tls12, tickets) = self.bag.counts();
        let port = self.bag.key.1.map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "<ClientSession {}{port} tls12={} tls13_tickets={tickets}>",
            self.bag.key.0,
            if tls12 { "yes" } else { "no" }
        )
    }
}
