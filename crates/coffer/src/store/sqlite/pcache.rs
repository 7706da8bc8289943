//! A thin wrapper around SQLite's own page cache that keeps every commit
//! from scanning the whole cache.
//!
//! Why (measured, see BENCHMARKS.md): at the end of every transaction the
//! pager drops cached pages past the end of the database
//! (`pcache1Truncate(dbSize + 1)`). The default cache only knows the
//! largest page number it has seen since the last truncation, and when a
//! B-tree page split sorts its new pages it briefly renumbers one of them to
//! the "pending byte" page, number 262,145 with 4 KiB pages (the page at the
//! 1 GiB offset, which SQLite never uses). From then on every commit believes
//! pages up to 262,145 may exist past the end, and for any database smaller
//! than 1 GiB it walks its entire hash table to find none. With our 512 MiB
//! cache that walk grows with every page ever cached: 15% of the writer
//! thread's time at 45,000 cached pages, more as the store grows.
//!
//! The wrapper forwards every call to the default cache and tracks the
//! largest page number actually in use itself, ignoring the transient
//! renumbering to the pending-byte page (the split moves the page away again
//! before it returns). A truncation is forwarded only when a page at or
//! beyond its limit can exist, which is exactly when the default cache would
//! find something to drop.
//!
//! It is installed once per process, before the first connection opens
//! (`sqlite3_config` refuses afterwards; then SQLite's default runs as is).

use rusqlite::ffi;
use std::ffi::{c_int, c_uint};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// SQLite's `PENDING_BYTE`: the first byte of the 1 GiB offset, whose page
/// holds the file locks and never data.
const PENDING_BYTE: c_uint = 0x4000_0000;

/// The default page cache's methods, copied at install.
static DEFAULT: OnceLock<Methods> = OnceLock::new();

struct Methods(ffi::sqlite3_pcache_methods2);

// SAFETY: function pointers, and the default cache's `pArg`, which SQLite
// hands only to those functions and which is never written after install.
unsafe impl Send for Methods {}
unsafe impl Sync for Methods {}

/// Whether our wrapper is SQLite's page cache in this process.
static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Truncations skipped (nothing to drop) and forwarded, since start.
static TRUNCATIONS_SKIPPED: AtomicU64 = AtomicU64::new(0);
static TRUNCATIONS_FORWARDED: AtomicU64 = AtomicU64::new(0);

/// One page cache: the default cache's, plus the largest page number that
/// may be in it.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    /// Every cached page's number is at most this (the pending-byte page
    /// aside, while a split renumbers through it).
    key_max: c_uint,
    pending_key: c_uint,
}

/// Installs the wrapper if no connection has opened yet; returns whether it
/// is in place. Safe to call any number of times from any thread.
pub fn install() -> bool {
    *INSTALLED.get_or_init(|| {
        let mut default = ffi::sqlite3_pcache_methods2 {
            iVersion: 0,
            pArg: std::ptr::null_mut(),
            xInit: None,
            xShutdown: None,
            xCreate: None,
            xCachesize: None,
            xPagecount: None,
            xFetch: None,
            xUnpin: None,
            xRekey: None,
            xTruncate: None,
            xDestroy: None,
            xShrink: None,
        };
        // SAFETY: GETPCACHE2 writes the current methods into the struct we
        // pass, which lives for the call.
        let got = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &mut default as *mut _) };
        if got != ffi::SQLITE_OK || default.xCreate.is_none() || default.xTruncate.is_none() {
            tracing::debug!(code = got, "SQLite's page cache is not wrapped (already initialised)");
            return false;
        }
        let wrapper = ffi::sqlite3_pcache_methods2 {
            iVersion: default.iVersion,
            pArg: default.pArg,
            xInit: default.xInit,
            xShutdown: default.xShutdown,
            xCreate: Some(create),
            xCachesize: Some(cachesize),
            xPagecount: Some(pagecount),
            xFetch: Some(fetch),
            xUnpin: Some(unpin),
            xRekey: Some(rekey),
            xTruncate: Some(truncate),
            xDestroy: Some(destroy),
            xShrink: Some(shrink),
        };
        if DEFAULT.set(Methods(default)).is_err() {
            return false;
        }
        // SAFETY: PCACHE2 copies the methods; it fails with SQLITE_MISUSE
        // (changing nothing) once SQLite is initialised.
        let set = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &wrapper as *const _) };
        if set != ffi::SQLITE_OK {
            tracing::debug!(code = set, "SQLite's page cache is not wrapped (already initialised)");
        }
        set == ffi::SQLITE_OK
    })
}

fn default() -> &'static ffi::sqlite3_pcache_methods2 {
    // Our methods are registered only after DEFAULT is set (see install).
    &DEFAULT.get().unwrap_or_else(|| unreachable!("the page cache wrapper runs only once installed")).0
}

/// SAFETY (all methods below): SQLite calls them with a cache made by
/// [`create`] and never after [`destroy`]; never concurrently for one cache,
/// since a cache belongs to one connection's pager (no shared-cache mode
/// here) and a rusqlite `Connection` is used by one thread at a time (it is
/// `Send`, not `Sync`).
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    unsafe { &mut *(p as *mut Cache) }
}

unsafe extern "C" fn create(page_bytes: c_int, extra_bytes: c_int, purgeable: c_int) -> *mut ffi::sqlite3_pcache {
    let Some(x_create) = default().xCreate else { return std::ptr::null_mut() };
    let inner = unsafe { x_create(page_bytes, extra_bytes, purgeable) };
    if inner.is_null() {
        return inner;
    }
    let pending_key = PENDING_BYTE / c_uint::try_from(page_bytes.max(1)).unwrap_or(1) + 1;
    Box::into_raw(Box::new(Cache { inner, key_max: 0, pending_key })) as *mut ffi::sqlite3_pcache
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    if let Some(f) = default().xCachesize {
        unsafe { f(cache(p).inner, pages) }
    }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    default().xPagecount.map_or(0, |f| unsafe { f(cache(p).inner) })
}

unsafe extern "C" fn fetch(p: *mut ffi::sqlite3_pcache, key: c_uint, create: c_int) -> *mut ffi::sqlite3_pcache_page {
    let c = unsafe { cache(p) };
    let Some(f) = default().xFetch else { return std::ptr::null_mut() };
    let page = unsafe { f(c.inner, key, create) };
    if !page.is_null() {
        c.key_max = c.key_max.max(key);
    }
    page
}

unsafe extern "C" fn unpin(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, discard: c_int) {
    if let Some(f) = default().xUnpin {
        unsafe { f(cache(p).inner, page, discard) }
    }
}

unsafe extern "C" fn rekey(p: *mut ffi::sqlite3_pcache, page: *mut ffi::sqlite3_pcache_page, old: c_uint, new: c_uint) {
    let c = unsafe { cache(p) };
    if let Some(f) = default().xRekey {
        unsafe { f(c.inner, page, old, new) }
    }
    // The pending-byte number is only a stop on the way during a split;
    // counting it is what made every commit walk the cache.
    if new != c.pending_key {
        c.key_max = c.key_max.max(new);
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let c = unsafe { cache(p) };
    if limit > c.key_max {
        // No cached page has a number at or past the limit.
        TRUNCATIONS_SKIPPED.fetch_add(1, Relaxed);
        return;
    }
    TRUNCATIONS_FORWARDED.fetch_add(1, Relaxed);
    if let Some(f) = default().xTruncate {
        unsafe { f(c.inner, limit) }
    }
    c.key_max = limit.saturating_sub(1);
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: made by Box::into_raw in create; SQLite destroys a cache once.
    let c = unsafe { Box::from_raw(p as *mut Cache) };
    if let Some(f) = default().xDestroy {
        unsafe { f(c.inner) }
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(f) = default().xShrink {
        unsafe { f(cache(p).inner) }
    }
}

/// Truncations skipped and forwarded since start: `(skipped, forwarded)`.
pub fn truncations() -> (u64, u64) {
    (TRUNCATIONS_SKIPPED.load(Relaxed), TRUNCATIONS_FORWARDED.load(Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// Random inserts split pages out of order (the renumbering through the
    /// pending-byte page), savepoint rollbacks shrink the database below
    /// pages still cached: the database must stay intact, and reads after a
    /// rollback must not see the rolled-back pages.
    #[test]
    fn the_wrapped_cache_keeps_the_database_intact_across_splits_and_rollbacks() {
        assert!(install(), "the wrapper must be installed before the first connection of this test binary");
        let (_, forwarded_before) = truncations();
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.sqlite3")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA cache_size=-65536; \
             CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID; CREATE TABLE kept (n INTEGER);",
        )
        .unwrap();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..40 {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            for _ in 0..200 {
                conn.execute("INSERT INTO t VALUES (?1, zeroblob(300))", [next().to_be_bytes()]).unwrap();
            }
            // A job that grows the file and is rolled back: its new pages
            // are past the end once it is undone.
            conn.execute_batch("SAVEPOINT job").unwrap();
            for _ in 0..300 {
                conn.execute("INSERT INTO t VALUES (?1, zeroblob(900))", [next().to_be_bytes()]).unwrap();
            }
            conn.execute_batch("ROLLBACK TO job; RELEASE job").unwrap();
            conn.execute("INSERT INTO kept VALUES (?1)", [round]).unwrap();
            conn.execute_batch("COMMIT").unwrap();
        }
        let (skipped_mid, forwarded_mid) = truncations();
        assert!(forwarded_mid > forwarded_before, "a rollback leaves pages past the end: their drop is forwarded");
        // Plain commits of random inserts: page splits renumber through the
        // pending-byte page, yet nothing is past the end, so no walk.
        for _ in 0..40 {
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            for _ in 0..200 {
                conn.execute("INSERT INTO t VALUES (?1, zeroblob(300))", [next().to_be_bytes()]).unwrap();
            }
            conn.execute_batch("COMMIT").unwrap();
        }
        let (skipped_after, _) = truncations();
        assert!(skipped_after >= skipped_mid + 40, "every plain commit skips the walk");
        let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 80 * 200, "the rolled-back rows are gone, the committed ones are there");
        let kept: i64 = conn.query_row("SELECT count(*) FROM kept", [], |r| r.get(0)).unwrap();
        assert_eq!(kept, 40);
        let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok");
    }
}
