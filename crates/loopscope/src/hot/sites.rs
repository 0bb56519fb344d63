//! The spawn-site table: interns `&'static Location` pointers into dense site ids, lock-free for
//! lookups (inserts take a lock), bounded by the session's `max_sites` (the rest share
//! `<other sites>`), with per-site counts of tasks spawned and finished.

use std::collections::HashMap;
use std::panic::Location;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use loopscope_core::model::SiteDecl;

use crate::hot::lock;

/// Interns spawn locations into dense site ids. Lookups are lock-free; inserts take a lock.
pub(crate) struct SiteTable {
    keys: Box<[AtomicUsize]>,
    ids: Box<[AtomicU32]>,
    inner: Mutex<SiteTableInner>,
    declared: AtomicUsize,
    /// Keys published in the lock-free table; capped so lookups stay short and lock-free.
    published: AtomicUsize,
    max_sites: u32,
    spawned: Box<[AtomicU64]>,
    finished: Box<[AtomicU64]>,
}

#[derive(Default)]
struct SiteTableInner {
    decls: Vec<SiteDecl>,
    by_value: HashMap<(&'static str, u32, u32), u32>,
}

impl SiteTable {
    pub(crate) fn new(max_sites: u32) -> Self {
        let capacity = (4 * max_sites as usize + 4).next_power_of_two();
        SiteTable {
            keys: (0..capacity).map(|_| AtomicUsize::new(0)).collect(),
            ids: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            inner: Mutex::new(SiteTableInner::default()),
            declared: AtomicUsize::new(0),
            published: AtomicUsize::new(0),
            max_sites,
            spawned: (0..=max_sites).map(|_| AtomicU64::new(0)).collect(),
            finished: (0..=max_sites).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    fn start(&self, key: usize) -> usize {
        // Fibonacci hashing of the pointer.
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16) & (self.keys.len() - 1)
    }

    /// The site id of a spawn location.
    #[inline]
    pub(crate) fn lookup(&self, loc: &'static Location<'static>) -> u32 {
        match self.find(loc) {
            Some(id) => id,
            // A program with thousands of spawn locations: the table is as full as it may get,
            // and every real site is in it; the rest share the "other" site without a lock.
            None if self.published.load(Ordering::Relaxed) >= self.keys.len() / 2 => self.max_sites,
            None => self.insert(loc),
        }
    }

    /// The site id of a spawn location already interned, without interning it.
    pub(crate) fn find(&self, loc: &'static Location<'static>) -> Option<u32> {
        let key = loc as *const Location<'static> as usize;
        let mask = self.keys.len() - 1;
        let mut i = self.start(key);
        for _ in 0..self.keys.len() {
            match self.keys[i].load(Ordering::Acquire) {
                0 => return None,
                k if k == key => return Some(self.ids[i].load(Ordering::Relaxed)),
                _ => i = (i + 1) & mask,
            }
        }
        None
    }

    #[cold]
    fn insert(&self, loc: &'static Location<'static>) -> u32 {
        let key = loc as *const Location<'static> as usize;
        let mut inner = lock(&self.inner);
        let value = (loc.file(), loc.line(), loc.column());
        let id = match inner.by_value.get(&value) {
            Some(id) => *id,
            None if inner.decls.len() < self.max_sites as usize => {
                let id = inner.decls.len() as u32;
                inner.decls.push(SiteDecl { id, file: loc.file().into(), line: loc.line(), column: loc.column() });
                inner.by_value.insert(value, id);
                id
            }
            None => {
                if inner.decls.len() == self.max_sites as usize {
                    let id = self.max_sites;
                    inner.decls.push(SiteDecl { id, file: SiteDecl::OTHER_FILE.into(), line: 0, column: 0 });
                }
                self.max_sites
            }
        };
        self.declared.store(inner.decls.len(), Ordering::Release);
        // Publish the pointer so later lookups skip the lock; the id is stored before the key.
        let mask = self.keys.len() - 1;
        let mut i = self.start(key);
        for _ in 0..self.keys.len() / 2 {
            match self.keys[i].load(Ordering::Relaxed) {
                0 => {
                    self.ids[i].store(id, Ordering::Relaxed);
                    self.keys[i].store(key, Ordering::Release);
                    self.published.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                k if k == key => break,
                _ => i = (i + 1) & mask,
            }
        }
        id
    }

    /// The most sites recorded apart; the id of `<other sites>`.
    pub(crate) fn max_sites(&self) -> u32 {
        self.max_sites
    }

    /// Tasks spawned from, and finished of, a site so far.
    pub(crate) fn task_counts(&self, site: usize) -> (u64, u64) {
        let load = |c: &[AtomicU64]| c.get(site).map_or(0, |c| c.load(Ordering::Relaxed));
        (load(&self.spawned), load(&self.finished))
    }

    /// Counts a task spawned from a site.
    pub(crate) fn count_spawn(&self, site: usize) {
        if let Some(c) = self.spawned.get(site) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a task of a site that finished; tasks whose spawn was not seen (tokio's own worker
    /// threads, run as blocking tasks) are not counted, so finished never exceeds spawned.
    pub(crate) fn count_finish(&self, site: usize) {
        if self.spawned.get(site).is_none_or(|c| c.load(Ordering::Relaxed) == 0) {
            return;
        }
        if let Some(c) = self.finished.get(site) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sites declared so far.
    pub(crate) fn declared(&self) -> usize {
        self.declared.load(Ordering::Acquire)
    }

    /// Declarations from `from` on.
    pub(crate) fn decls_from(&self, from: usize) -> Vec<SiteDecl> {
        lock(&self.inner).decls.get(from..).map(<[SiteDecl]>::to_vec).unwrap_or_default()
    }
}
