//! Rows held in memory by id, for the request paths that authenticate (API keys, OAuth
//! clients) without a database read. Every reload bumps a generation, so a row read from the
//! database before a reload is not remembered after it.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

pub(super) struct RowCache<T> {
    inner: RwLock<Rows<T>>,
}

struct Rows<T> {
    by_id: HashMap<String, Arc<T>>,
    generation: u64,
}

impl<T> Default for RowCache<T> {
    fn default() -> Self {
        RowCache { inner: RwLock::new(Rows { by_id: HashMap::new(), generation: 0 }) }
    }
}

impl<T> RowCache<T> {
    /// The row of `id`, if held.
    pub fn get(&self, id: &str) -> Option<Arc<T>> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).by_id.get(id).cloned()
    }

    /// The generation now: read it before reading a row from the database, then hand it to
    /// [`RowCache::remember`].
    pub fn generation(&self) -> u64 {
        self.inner.read().unwrap_or_else(PoisonError::into_inner).generation
    }

    /// Holds `row` under `id`, unless a reload happened since `generation` was read.
    pub fn remember(&self, generation: u64, id: String, row: Arc<T>) {
        let mut rows = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        if rows.generation == generation {
            rows.by_id.insert(id, row);
        }
    }

    /// Replaces every row with `rows` (none, when they could not be read: then nothing stale
    /// is trusted) and bumps the generation.
    pub fn replace(&self, rows: Option<impl IntoIterator<Item = (String, T)>>) {
        let mut held = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        held.by_id.clear();
        held.generation += 1;
        held.by_id.extend(rows.into_iter().flatten().map(|(id, row)| (id, Arc::new(row))));
    }
}
