//! Consistent hashing for the sticky strategy: each instance owns many points
//! on a 64-bit ring, a key goes to the owner of the first point at or after
//! its hash. When an instance leaves, only the keys on its points move (to
//! the next points' owners); every other key stays where it was.
//!
//! The hash is FNV-1a followed by a 64-bit finalizer: fixed, so every client
//! process (in any version of this SDK or of Rust) maps a key to the same
//! instance.

/// Points per instance: enough for an even spread over a handful of
/// instances (about ±10 % at 3 instances), cheap to rebuild.
pub(crate) const POINTS_PER_INSTANCE: u32 = 160;

/// A hash ring over a list of members, built when the list changes.
#[derive(Debug, Default)]
pub(crate) struct Ring {
    /// `(point, member index)`, sorted by point.
    points: Vec<(u64, u32)>,
}

impl Ring {
    /// Builds the ring for `ids`; member `i` is `ids[i]`.
    pub(crate) fn build<'a>(ids: impl IntoIterator<Item = &'a str>) -> Ring {
        let mut points = Vec::new();
        for (i, id) in ids.into_iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            for v in 0..POINTS_PER_INSTANCE {
                let mut h = Fnv::new();
                h.write(id.as_bytes());
                h.write(b"#");
                h.write(&v.to_le_bytes());
                points.push((h.finish(), index));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    /// The member owning `key_hash`, skipping members for which `skip` is
    /// true (instances already tried by this call).
    pub(crate) fn owner(&self, key_hash: u64, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let n = self.points.len();
        if n == 0 {
            return None;
        }
        let start = self.points.partition_point(|(p, _)| *p < key_hash);
        (0..n)
            .map(|step| self.points[(start + step) % n].1 as usize)
            .find(|&member| !skip(member))
    }
}

/// The stable hash of a sticky key.
pub(crate) fn hash_key(key: &str) -> u64 {
    let mut h = Fnv::new();
    h.write(key.as_bytes());
    h.finish()
}

struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// FNV alone clusters similar inputs; the finalizer spreads them.
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners(ids: &[&str], keys: &[String]) -> Vec<String> {
        let ring = Ring::build(ids.iter().copied());
        keys.iter()
            .map(|k| ids[ring.owner(hash_key(k), |_| false).unwrap()].to_owned())
            .collect()
    }

    #[test]
    fn a_departure_moves_only_its_own_keys() {
        let keys: Vec<String> = (0..3000).map(|i| format!("account-{i}")).collect();
        let before = owners(&["a", "b", "c"], &keys);
        let after = owners(&["a", "c"], &keys);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            if b == "b" {
                moved += 1;
                assert_ne!(a, "b");
            } else {
                assert_eq!(a, b, "a key not on the departed instance moved");
            }
        }
        // Roughly a third of the keys were on b.
        assert!((700..1300).contains(&moved), "moved {moved}");
    }

    #[test]
    fn spreads_keys_evenly_and_skips_tried_members() {
        let keys: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
        let got = owners(&["x-1", "x-2", "x-3"], &keys);
        for id in ["x-1", "x-2", "x-3"] {
            let n = got.iter().filter(|o| *o == id).count();
            assert!((700..1300).contains(&n), "{id} owns {n} of 3000");
        }
        let ring = Ring::build(["x-1", "x-2", "x-3"]);
        let h = hash_key("k1");
        let first = ring.owner(h, |_| false).unwrap();
        let second = ring.owner(h, |m| m == first).unwrap();
        assert_ne!(first, second);
        assert_eq!(ring.owner(h, |_| true), None);
        assert_eq!(Ring::default().owner(h, |_| false), None);
    }

    #[test]
    fn the_hash_is_stable() {
        // Pinned: clients in other processes and versions must agree.
        assert_eq!(hash_key("account-42"), 0x202c_0b38_478c_135f);
        assert_eq!(hash_key(""), 0xefd0_1f60_ba99_2926);
    }
}
