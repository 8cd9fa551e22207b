//! [`NameTable`]: a router's names and their routes' positions, looked up on every message.
//!
//! The names are few and known when the router is built, so the table is tuned then: a
//! hash of a name's length and four of its bytes (no loop over the name), and a
//! multiplier tried until the names spread over the buckets with the fewest sharing one.
//! A lookup is one multiplication, one bucket and usually one comparison: cheaper than
//! hashing every byte into a general map. A peer's name only looks one up, so how the
//! names fall into buckets is the application's, fixed at start-up.

/// Names and positions, grouped by bucket.
#[derive(Debug)]
pub(crate) struct NameTable {
    /// The entries of bucket `b` are `entries[starts[b]..starts[b + 1]]`.
    starts: Box<[u32]>,
    entries: Box<[(Box<[u8]>, usize)]>,
    multiplier: u64,
    /// `64 - log2(buckets)`: the hash's top bits pick the bucket.
    shift: u32,
}

/// Odd multipliers to try, from the golden ratio's on: the first that spreads the names
/// best is kept.
const MULTIPLIERS: [u64; 8] = [
    0x9E37_79B9_7F4A_7C15,
    0xC2B2_AE3D_27D4_EB4F,
    0x1656_67B1_9E37_79F9,
    0xD6E8_FEB8_6659_FD93,
    0xFF51_AFD7_ED55_8CCD,
    0xC4CE_B9FE_1A85_EC53,
    0x8EBC_6AF0_9C88_C6E3,
    0x5897_65F1_2B4E_5F97,
];

/// What the hash reads of a name: its length, its first and middle byte and its last two.
fn key(name: &[u8]) -> u64 {
    let len = name.len();
    let byte = |at: usize| name.get(at).copied().map_or(0, u64::from);
    (len as u64)
        | byte(0) << 16
        | byte(len / 2) << 24
        | byte(len.wrapping_sub(1)) << 32
        | byte(len.wrapping_sub(2)) << 40
}

/// `a == b`, inlined for the short names requests carry: a name of 4 to 16 bytes is two
/// overlapping word compares rather than a call to `memcmp` (a third of a lookup).
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    fn word<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
        bytes.get(at..at + N)?.try_into().ok()
    }
    let len = a.len();
    if len != b.len() {
        return false;
    }
    match len {
        8..=16 => {
            word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, len - 8) == word::<8>(b, len - 8)
        }
        4..8 => {
            word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, len - 4) == word::<4>(b, len - 4)
        }
        _ => a == b,
    }
}

impl NameTable {
    /// A table of `names` (distinct, checked by the caller).
    pub(crate) fn new(names: Vec<(Box<[u8]>, usize)>) -> Self {
        // Twice as many buckets as names, at least two.
        let buckets = (names.len() * 2).next_power_of_two().max(2);
        let shift = 64 - buckets.trailing_zeros();
        let bucket_of =
            |name: &[u8], multiplier: u64| (key(name).wrapping_mul(multiplier) >> shift) as usize;
        let spread = |multiplier: u64| {
            let mut counts = vec![0usize; buckets];
            for (name, _) in &names {
                counts[bucket_of(name, multiplier)] += 1;
            }
            counts.into_iter().max().unwrap_or(0)
        };
        let multiplier = MULTIPLIERS
            .into_iter()
            .min_by_key(|&multiplier| spread(multiplier))
            .unwrap_or(MULTIPLIERS[0]);
        let mut entries = names;
        entries.sort_by_key(|(name, _)| bucket_of(name, multiplier));
        let mut starts = vec![0u32; buckets + 1];
        for (name, _) in &entries {
            starts[bucket_of(name, multiplier) + 1] += 1;
        }
        for bucket in 0..buckets {
            starts[bucket + 1] += starts[bucket];
        }
        NameTable {
            starts: starts.into(),
            entries: entries.into(),
            multiplier,
            shift,
        }
    }

    /// The position of the route named `name`.
    #[inline]
    pub(crate) fn get(&self, name: &[u8]) -> Option<usize> {
        let bucket = (key(name).wrapping_mul(self.multiplier) >> self.shift) as usize;
        let start = *self.starts.get(bucket)? as usize;
        let end = *self.starts.get(bucket + 1)? as usize;
        self.entries
            .get(start..end)?
            .iter()
            .find(|(known, _)| same(known, name))
            .map(|&(_, index)| index)
    }

    /// How many names the table holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(names: &[&str]) -> NameTable {
        NameTable::new(
            names
                .iter()
                .enumerate()
                .map(|(index, name)| (name.as_bytes().into(), index))
                .collect(),
        )
    }

    #[test]
    fn finds_every_name_and_nothing_else() {
        // Names alike in length and first, middle and last bytes share a bucket and are
        // told apart by the comparison.
        let names = [
            "echo",
            "login",
            "logout",
            "say",
            "a",
            "ab",
            "axxb",
            "ayyb",
            "azzb",
            "room.join",
            "room.leave",
            "x",
            "ww.subscribe",
        ];
        let table = table(&names);
        assert_eq!(table.len(), names.len());
        for (index, name) in names.iter().enumerate() {
            assert_eq!(table.get(name.as_bytes()), Some(index), "{name}");
        }
        for unknown in ["", "ech", "echo2", "axyb", "LOGIN", "room.joins"] {
            assert_eq!(table.get(unknown.as_bytes()), None, "{unknown}");
        }
    }

    #[test]
    fn same_is_equality_at_every_length() {
        for len in 0..=20 {
            let name: Vec<u8> = (0..len).map(|i| b'a' + i as u8).collect();
            assert!(same(&name, &name.clone()), "{len}");
            for at in 0..len {
                let mut other = name.clone();
                other[at] = b'Z';
                assert!(!same(&name, &other), "{len} differs at {at}");
            }
            assert!(!same(&name, &name[..len.saturating_sub(1)]) || len == 0);
        }
    }

    #[test]
    fn an_empty_table_finds_nothing() {
        assert_eq!(table(&[]).get(b"echo"), None);
    }

    #[test]
    fn spreads_distinct_names() {
        let names: Vec<String> = (0..20).map(|i| format!("route{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let table = table(&refs);
        let largest = table.starts.windows(2).map(|w| w[1] - w[0]).max();
        assert!(largest <= Some(2), "largest bucket {largest:?}");
        for (index, name) in refs.iter().enumerate() {
            assert_eq!(table.get(name.as_bytes()), Some(index));
        }
    }
}
