//! [`NameTable`]: a router's names and their routes' positions, looked up on every message.
//!
//! The names are few and known when the router is built, so the table is tuned then: a
//! hash of a name's length and four of its bytes (no loop over the name), into an open
//! table of at least four slots per name (linear probing; 32 bytes a slot, so 4 KiB for
//! 20 names), with the multiplier that leaves the fewest names away from their own slot.
//! A lookup is one multiplication, one slot and usually one comparison: cheaper than
//! hashing every byte into a general map, and than a `match` on the names (which checks
//! the name is UTF-8 first). Names alike in every byte the hash reads share a home and
//! are told apart by the probe. A peer's name only looks one up, so how the names fall is
//! the application's, fixed at start-up.

/// A name and its route's position.
type Entry = (Box<[u8]>, usize);

/// Names and positions, each in its slot or the first free one after it.
#[derive(Debug)]
pub(crate) struct NameTable {
    /// A power of two long, at least twice the names: a probe always ends on a free slot.
    slots: Box<[Option<Entry>]>,
    multiplier: u64,
    /// `64 - log2(slots)`: the hash's top bits pick the slot.
    shift: u32,
    len: usize,
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
#[inline(always)]
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
        let size = (names.len() * 4).next_power_of_two().max(2);
        let shift = 64 - size.trailing_zeros();
        let place = |multiplier: u64| {
            let mut slots: Vec<Option<Entry>> = vec![None; size];
            let mut displaced = 0;
            for (name, index) in &names {
                let mut at = home(name, multiplier, shift);
                while slots[at].is_some() {
                    at = (at + 1) & (size - 1);
                    displaced += 1;
                }
                slots[at] = Some((name.clone(), *index));
            }
            (displaced, slots)
        };
        let (multiplier, (_, slots)) = MULTIPLIERS
            .into_iter()
            .map(|multiplier| (multiplier, place(multiplier)))
            .min_by_key(|(_, (displaced, _))| *displaced)
            .unwrap_or_else(|| (MULTIPLIERS[0], place(MULTIPLIERS[0])));
        NameTable {
            slots: slots.into(),
            multiplier,
            shift,
            len: names.len(),
        }
    }

    /// The position of the route named `name`.
    #[inline(always)]
    pub(crate) fn get(&self, name: &[u8]) -> Option<usize> {
        let mut at = home(name, self.multiplier, self.shift);
        loop {
            // A free slot ends the probe: the name is not here.
            let (known, index) = self.slots.get(at)?.as_ref()?;
            if same(known, name) {
                return Some(*index);
            }
            at = (at + 1) & (self.slots.len() - 1);
        }
    }

    /// How many names the table holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// The slot a name's probe starts at.
#[inline(always)]
fn home(name: &[u8], multiplier: u64, shift: u32) -> usize {
    (key(name).wrapping_mul(multiplier) >> shift) as usize
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
            // Alike in every byte the hash reads (length, first, middle, last two): one
            // home, told apart by the probe.
            "aXcdefg",
            "aYcdefg",
            "aZcdefg",
        ];
        let table = table(&names);
        assert_eq!(table.len(), names.len());
        for (index, name) in names.iter().enumerate() {
            assert_eq!(table.get(name.as_bytes()), Some(index), "{name}");
        }
        for unknown in ["", "ech", "echo2", "axyb", "LOGIN", "room.joins", "aWcdefg"] {
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
        let away = refs
            .iter()
            .filter(|name| {
                let at = home(name.as_bytes(), table.multiplier, table.shift);
                table.slots[at].as_ref().map(|(known, _)| &**known) != Some(name.as_bytes())
            })
            .count();
        assert!(away <= 2, "{away} names away from their own slot");
        for (index, name) in refs.iter().enumerate() {
            assert_eq!(table.get(name.as_bytes()), Some(index));
        }
    }
}
