//! A bounded result cache with a TTL, keyed by the bound values of a lookup. Pure data
//! (the caller passes `now`), evicting the oldest insertion first.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Row;

/// Cached results (rows and misses).
pub struct ResultCache {
    max: usize,
    ttl: Duration,
    map: HashMap<Vec<u8>, (Instant, Option<Row>)>,
    order: VecDeque<(Vec<u8>, Instant)>,
}

impl ResultCache {
    /// A cache of at most `max` entries kept for `ttl`.
    pub fn new(max: usize, ttl: Duration) -> Self {
        ResultCache {
            max: max.max(1),
            ttl,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The cached result for `key` if it is fresh.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<Option<Row>> {
        match self.map.get(key) {
            Some((at, v)) if now.duration_since(*at) < self.ttl => Some(v.clone()),
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remember a result, evicting the oldest entries beyond `max`.
    pub fn put(&mut self, key: Vec<u8>, value: Option<Row>, now: Instant) {
        self.order.push_back((key.clone(), now));
        self.map.insert(key, (now, value));
        while self.map.len() > self.max || self.order.len() > self.max * 2 {
            let Some((k, at)) = self.order.pop_front() else {
                break;
            };
            // Only the insertion the map still holds evicts the entry.
            if self.map.get(&k).is_some_and(|(t, _)| *t == at) {
                self.map.remove(&k);
            }
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_evicts_oldest() {
        let t0 = Instant::now();
        let mut c = ResultCache::new(2, Duration::from_millis(100));
        c.put(b"a".to_vec(), Some(Row::from("{}")), t0);
        c.put(b"b".to_vec(), None, t0);
        assert_eq!(c.get(b"b", t0), Some(None));
        c.put(b"c".to_vec(), None, t0 + Duration::from_millis(1));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(b"a", t0), None, "oldest evicted");
        assert_eq!(
            c.get(b"c", t0 + Duration::from_millis(200)),
            None,
            "expired"
        );
    }
}
