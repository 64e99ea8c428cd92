//! Client session resumption for the Rust engines: one bounded cache per client context, keyed
//! by (server name, port), and the sessions a connection received as an opaque Python object.
//!
//! The cache is generic over an engine's two kinds of value: a TLS 1.2 session (`A`, reused, so
//! `Clone`) and a TLS 1.3 ticket (`B`, used once). What a connection receives goes into its
//! `SessionBag`; the context's `SessionCache` lists the bags per key (newest last) and takes from
//! them. The bag is also what a `Connection` hands to Python (`ClientSession`): offering it to a
//! new connection resumes exactly that session (the `ssl` bridge's `session=`), cache or not.
//!
//! rustls keys its own cache by server name only and calls its store with nothing else, so every
//! rustls connection gets its own store (`ConnStore`, in a per-connection copy of the
//! `ClientConfig`: a few reference counts) that knows the connection's key.
//!
//! Rules kept from rustls' `ClientSessionMemoryCache`: a TLS 1.3 ticket is used at most once
//! (rustls' values cannot be copied, and single use keeps connections unlinkable); a TLS 1.2
//! session may be reused until the server refuses it; at most 8 tickets per bag. The cache holds
//! `MAX_SERVERS` keys and `MAX_BAGS` bags per key, forgetting the least recently used. Lock
//! order: the cache's servers, then a bag (never the other way round).

use std::any::Any;
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

struct BagInner<A, B> {
    tls12: Option<A>,
    tls13: VecDeque<B>,
}

/// What one connection received from its server: the TLS 1.2 session and TLS 1.3 tickets.
pub struct SessionBag<A, B> {
    key: Key,
    origin: u64,
    inner: Mutex<BagInner<A, B>>,
}

impl<A: Clone, B> SessionBag<A, B> {
    pub fn new(key: Key, origin: u64) -> Self {
        SessionBag {
            key,
            origin,
            inner: Mutex::new(BagInner {
                tls12: None,
                tls13: VecDeque::new(),
            }),
        }
    }

    fn empty(&self) -> bool {
        let inner = self.inner.lock();
        inner.tls12.is_none() && inner.tls13.is_empty()
    }

    pub fn take_tls13(&self) -> Option<B> {
        self.inner.lock().tls13.pop_back()
    }

    pub fn tls12(&self) -> Option<A> {
        self.inner.lock().tls12.clone()
    }

    pub fn remove_tls12(&self) {
        self.inner.lock().tls12 = None;
    }

    pub fn set_tls12(&self, value: A) {
        self.inner.lock().tls12 = Some(value);
    }

    /// A TLS 1.3 ticket if there is one, else the TLS 1.2 session.
    pub fn take_any(&self) -> Option<(A, bool)>
    where
        B: Into<A>,
    {
        if let Some(t) = self.take_tls13() {
            return Some((t.into(), true));
        }
        self.tls12().map(|s| (s, false))
    }

    pub fn push_tls13(&self, value: B) {
        let mut inner = self.inner.lock();
        if inner.tls13.len() >= MAX_TICKETS {
            inner.tls13.pop_front();
        }
        inner.tls13.push_back(value);
    }
}

/// What Python's `ClientSession` sees of a bag, whatever the engine's values.
pub trait AnyBag: Send + Sync {
    fn key(&self) -> &Key;
    fn origin(&self) -> u64;
    fn is_empty(&self) -> bool;
    /// (holds a TLS 1.2 session, TLS 1.3 tickets held)
    fn counts(&self) -> (bool, usize);
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<A: Clone + Send + 'static, B: Send + 'static> AnyBag for SessionBag<A, B> {
    fn key(&self) -> &Key {
        &self.key
    }

    fn origin(&self) -> u64 {
        self.origin
    }

    fn is_empty(&self) -> bool {
        self.empty()
    }

    fn counts(&self) -> (bool, usize) {
        let inner = self.inner.lock();
        (inner.tls12.is_some(), inner.tls13.len())
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

struct Entry<A, B> {
    kx_hint: Option<NamedGroup>,
    bags: VecDeque<Arc<SessionBag<A, B>>>,
}

struct Servers<A, B> {
    map: HashMap<Key, Entry<A, B>>,
    /// Keys, least recently used first.
    order: VecDeque<Key>,
}

impl<A: Clone, B> Servers<A, B> {
    fn touch(&mut self, key: &Key) {
        if let Some(pos) = self.order.iter().position(|k| k == key) {
            if let Some(k) = self.order.remove(pos) {
                self.order.push_back(k);
            }
        }
    }

    fn entry(&mut self, key: &Key) -> &mut Entry<A, B> {
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
pub struct SessionCache<A, B> {
    servers: Mutex<Servers<A, B>>,
}

impl<A: Clone, B> Default for SessionCache<A, B> {
    fn default() -> Self {
        SessionCache {
            servers: Mutex::new(Servers {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }
}

impl<A: Clone, B> SessionCache<A, B> {
    fn set_kx_hint(&self, key: &Key, group: NamedGroup) {
        self.servers.lock().entry(key).kx_hint = Some(group);
    }

    fn kx_hint(&self, key: &Key) -> Option<NamedGroup> {
        self.servers.lock().map.get(key).and_then(|e| e.kx_hint)
    }

    /// List `bag` under its key (newest last) when it received something.
    pub fn remember(&self, bag: &Arc<SessionBag<A, B>>) {
        let mut servers = self.servers.lock();
        let entry = servers.entry(&bag.key);
        entry.bags.retain(|b| !b.empty());
        if entry.bags.iter().any(|b| Arc::ptr_eq(b, bag)) {
            return;
        }
        if entry.bags.len() >= MAX_BAGS {
            entry.bags.pop_front();
        }
        entry.bags.push_back(bag.clone());
    }

    pub fn take_tls13(&self, key: &Key) -> Option<B> {
        let mut servers = self.servers.lock();
        let entry = servers.map.get_mut(key)?;
        let found = entry.bags.iter().rev().find_map(|b| b.take_tls13());
        entry.bags.retain(|b| !b.empty());
        found
    }

    pub fn tls12(&self, key: &Key) -> Option<A> {
        let servers = self.servers.lock();
        servers
            .map
            .get(key)?
            .bags
            .iter()
            .rev()
            .find_map(|b| b.tls12())
    }

    /// A TLS 1.3 ticket if there is one, else a TLS 1.2 session.
    pub fn take_any(&self, key: &Key) -> Option<(A, bool)>
    where
        B: Into<A>,
    {
        if let Some(t) = self.take_tls13(key) {
            return Some((t.into(), true));
        }
        self.tls12(key).map(|s| (s, false))
    }

    pub fn remove_tls12(&self, key: &Key) {
        let mut servers = self.servers.lock();
        if let Some(entry) = servers.map.get_mut(key) {
            for bag in &entry.bags {
                bag.remove_tls12();
            }
            entry.bags.retain(|b| !b.empty());
        }
    }

    pub fn clear(&self) {
        let mut servers = self.servers.lock();
        servers.map.clear();
        servers.order.clear();
    }
}

// -- rustls ------------------------------------------------------------------------------------

pub type RustlsBag = SessionBag<Tls12ClientSessionValue, Tls13ClientSessionValue>;
pub type RustlsCache = SessionCache<Tls12ClientSessionValue, Tls13ClientSessionValue>;

/// The store of one rustls client connection (see the module docs).
pub struct ConnStore {
    key: Key,
    /// The context's cache; None when the context has resumption off.
    cache: Option<Arc<RustlsCache>>,
    /// What this connection receives.
    bag: Arc<RustlsBag>,
    /// A session the caller asked to resume (then the cache is not consulted).
    offered: Option<Arc<RustlsBag>>,
}

impl ConnStore {
    pub fn new(
        key: Key,
        origin: u64,
        cache: Option<Arc<RustlsCache>>,
        offered: Option<Arc<RustlsBag>>,
    ) -> Self {
        ConnStore {
            bag: Arc::new(SessionBag::new(key.clone(), origin)),
            key,
            cache,
            offered,
        }
    }

    pub fn bag(&self) -> Arc<RustlsBag> {
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
        self.bag.set_tls12(value);
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
        self.bag.push_tls13(value);
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

// -- NSS ---------------------------------------------------------------------------------------

/// NSS's resumption tokens (`SSL_SetResumptionTokenCallback`): opaque bytes, TLS 1.2 or 1.3.
pub type TokenBag = SessionBag<Vec<u8>, Vec<u8>>;
pub type TokenCache = SessionCache<Vec<u8>, Vec<u8>>;

// -- Python ------------------------------------------------------------------------------------

/// The sessions one client connection received: offer it to a new connection of the same
/// context to resume (TLS 1.3 tickets are used once each; a TLS 1.2 session until refused).
#[pyclass(frozen, name = "ClientSession", module = "unitls._native")]
pub struct ClientSession {
    bag: Arc<dyn AnyBag>,
}

impl ClientSession {
    pub fn new(bag: Arc<dyn AnyBag>) -> Self {
        ClientSession { bag }
    }

    /// The engine's bag behind this session, if it is one of type `T` made by the client
    /// configuration `origin` for `server_name` (else the ValueError/TypeError to raise).
    pub fn offered<T: Send + Sync + 'static>(
        &self,
        origin: u64,
        server_name: &str,
    ) -> PyResult<Arc<T>> {
        if self.bag.origin() != origin {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "the session belongs to another client context: sessions resume only with the \
                 context that made them",
            ));
        }
        let name = &self.bag.key().0;
        if name != server_name {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "the session was made with server {name:?}, not {server_name:?}: a session \
                 resumes only with the server name it was verified for"
            )));
        }
        self.bag.clone().as_any().downcast::<T>().map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err("the session comes from another engine")
        })
    }
}

#[pymethods]
impl ClientSession {
    /// The server name the session was made with.
    #[getter]
    fn server_name(&self) -> &str {
        &self.bag.key().0
    }

    /// The server port the session was made with (None when the connection did not say).
    #[getter]
    fn port(&self) -> Option<u16> {
        self.bag.key().1
    }

    /// Whether the session can still be offered (it holds a TLS 1.2 session or a ticket).
    #[getter]
    fn resumable(&self) -> bool {
        !self.bag.is_empty()
    }

    fn __repr__(&self) -> String {
        let (tls12, tickets) = self.bag.counts();
        let (name, port) = self.bag.key();
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "<ClientSession {name}{port} tls12={} tls13_tickets={tickets}>",
            if tls12 { "yes" } else { "no" }
        )
    }
}
