//! Stable partitioning: `partition = fnv1a64(canonical key bytes) % partitions`.
//!
//! FNV-1a (64-bit, offset basis 0xcbf29ce484222325, prime 0x100000001b3) is fixed here
//! forever: it does not depend on the Rust version, the platform or a random seed, so a
//! key maps to the same partition across versions, restarts and nodes. Changing it would
//! move keys between partitions and break `key_ordered` guarantees across an upgrade.

/// 64-bit FNV-1a of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of a canonical key (see `engine::admit::canonical_key`).
pub fn partition_of(canonical_key: &str, partitions: u32) -> u32 {
    (fnv1a64(canonical_key.as_bytes()) % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn partitions_are_stable_fixed_vectors() {
        // These values are part of the on-disk/cluster contract: never change them.
        let got: Vec<u32> = ["u1", "u2", "u3", "u42", "", "42"]
            .iter()
            .map(|k| partition_of(k, 4))
            .collect();
        let expect: Vec<u32> = ["u1", "u2", "u3", "u42", "", "42"]
            .iter()
            .map(|k| (fnv1a64(k.as_bytes()) % 4) as u32)
            .collect();
        assert_eq!(got, expect);
        // Computed independently (Python reference implementation of FNV-1a).
        assert_eq!(got, vec![3, 2, 1, 2, 1, 3]);
        assert_eq!(fnv1a64(b"u42"), 0x4d2f65193e88405a);
        assert_eq!(partition_of("anything", 1), 0);
    }
}
