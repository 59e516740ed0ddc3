//! A bounded result cache with a TTL, keyed by the bound values of a lookup. Pure data
//! (the caller passes `now`), evicting the oldest insertion first. Rows are kept for `ttl`,
//! misses for `miss_ttl` (0: misses are not kept); errors and timeouts are never offered
//! to it.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Row;

/// Cached results (rows and misses).
pub struct ResultCache {
    max: usize,
    ttl: Duration,
    miss_ttl: Duration,
    map: HashMap<Vec<u8>, (Instant, Option<Row>)>,
    order: VecDeque<(Vec<u8>, Instant)>,
}

impl ResultCache {
    /// A cache of at most `max` entries: rows kept for `ttl`, misses for `miss_ttl`.
    pub fn new(max: usize, ttl: Duration, miss_ttl: Duration) -> Self {
        ResultCache {
            max: max.max(1),
            ttl,
            miss_ttl,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The cached result for `key` if it is fresh.
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<Option<Row>> {
        match self.map.get(key) {
            Some((at, v))
                if now.duration_since(*at) < if v.is_some() { self.ttl } else { self.miss_ttl } =>
            {
                Some(v.clone())
            }
            Some(_) => {
                self.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Remember a result (a miss only with a `miss_ttl`), evicting the oldest entries
    /// beyond `max`.
    pub fn put(&mut self, key: Vec<u8>, value: Option<Row>, now: Instant) {
        if value.is_none() && self.miss_ttl.is_zero() {
            return;
        }
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
        let mut c = ResultCache::new(2, Duration::from_millis(100), Duration::from_millis(100));
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

    #[test]
    fn misses_are_kept_only_for_their_own_ttl() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = ResultCache::new(10, ms(1000), ms(10));
        c.put(b"row".to_vec(), Some(Row::from("{}")), t0);
        c.put(b"miss".to_vec(), None, t0);
        assert_eq!(c.get(b"miss", t0 + ms(5)), Some(None));
        assert_eq!(c.get(b"miss", t0 + ms(20)), None, "the miss expired");
        assert!(c.get(b"row", t0 + ms(20)).is_some(), "the row did not");
        let mut none = ResultCache::new(10, ms(1000), Duration::ZERO);
        none.put(b"miss".to_vec(), None, t0);
        assert!(none.is_empty(), "miss_ttl 0: misses are not cached");
    }
}
