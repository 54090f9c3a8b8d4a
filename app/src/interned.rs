//! Container names and outer addresses held once per process, so that an
//! aggregate row's key carries a 4-byte id for each instead of 32 or 16
//! bytes (most rows have neither: the id is 0).
//!
//! Guarantees:
//! - An id stands for exactly one value and a value has exactly one id, for
//!   the life of the process: equal ids are equal values, so keys compare
//!   and hash equal by id exactly when their values are equal.
//! - Id 0 is the all-zero value (no name, no address) and is never stored.
//! - The order of [`Name`] and [`OuterAddr`] is the order of their bytes,
//!   not of their ids: sorting keys gives the same order as sorting the
//!   values they stand for.
//! - Values are added only by [`Name::intern`]/[`OuterAddr::intern`], which
//!   the aggregate calls only for a row it creates: the tables hold at most
//!   two values per row ever created, bounded like the rows.
//!
//! Not guaranteed: that ids are the same from one run to the next (they are
//! never saved: the checkpoint writes the values).

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};

/// Values of one size, each once, with their ids (index + 1).
struct Pool<const N: usize> {
    ids: HashMap<[u8; N], u32, foldhash::fast::RandomState>,
    values: Vec<[u8; N]>,
}

impl<const N: usize> Default for Pool<N> {
    fn default() -> Self {
        Pool { ids: HashMap::default(), values: Vec::new() }
    }
}

static NAMES: LazyLock<RwLock<Pool<32>>> = LazyLock::new(Default::default);
static ADDRS: LazyLock<RwLock<Pool<16>>> = LazyLock::new(Default::default);

/// The id of `v` if it has one (0 for zero).
fn find<const N: usize>(pool: &RwLock<Pool<N>>, v: &[u8; N]) -> Option<u32> {
    if *v == [0; N] {
        return Some(0);
    }
    // A poisoned lock only means another thread panicked while holding it;
    // the pool is only ever appended to whole, so its contents stay valid.
    pool.read().unwrap_or_else(|e| e.into_inner()).ids.get(v).copied()
}

/// The id of `v`, added when new.
fn intern<const N: usize>(pool: &RwLock<Pool<N>>, v: &[u8; N]) -> u32 {
    if let Some(id) = find(pool, v) {
        return id;
    }
    let mut p = pool.write().unwrap_or_else(|e| e.into_inner());
    if let Some(&id) = p.ids.get(v) {
        return id;
    }
    p.values.push(*v);
    // Bounded by the rows (module doc), far below 2^32.
    let id = u32::try_from(p.values.len()).unwrap_or(u32::MAX);
    p.ids.insert(*v, id);
    id
}

/// The value of `id` (zero for 0 or an id never given out).
fn value<const N: usize>(pool: &RwLock<Pool<N>>, id: u32) -> [u8; N] {
    if id == 0 {
        return [0; N];
    }
    let p = pool.read().unwrap_or_else(|e| e.into_inner());
    p.values.get(id as usize - 1).copied().unwrap_or([0; N])
}

macro_rules! interned {
    ($(#[$doc:meta])* $name:ident, $n:literal, $pool:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name(u32);

        impl $name {
            /// The zero value (no name, no address).
            pub const NONE: $name = $name(0);

            /// The id of `v`, added to the process's table when new.
            pub fn intern(v: &[u8; $n]) -> Self {
                $name(intern(&$pool, v))
            }

            /// The id of `v` if it already has one; adds nothing.
            pub fn find(v: &[u8; $n]) -> Option<Self> {
                find(&$pool, v).map($name)
            }

            /// The value this id stands for.
            pub fn bytes(self) -> [u8; $n] {
                value(&$pool, self.0)
            }

            /// The id as a number (0: none), for hashing.
            pub fn id(self) -> u32 {
                self.0
            }
        }

        impl Ord for $name {
            /// The order of the values' bytes (ids are in order of arrival).
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                if self.0 == other.0 {
                    return std::cmp::Ordering::Equal;
                }
                self.bytes().cmp(&other.bytes())
            }
        }

        impl PartialOrd for $name {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
    };
}

interned!(
    /// A container name (32 bytes, NUL-padded) as an id.
    Name,
    32,
    NAMES
);
interned!(
    /// An outer (tunnel) address (16-byte record form) as an id.
    OuterAddr,
    16,
    ADDRS
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_keeps_one_id_and_zero_is_id_zero() {
        let mut a = [0u8; 32];
        a[..3].copy_from_slice(b"web");
        let x = Name::intern(&a);
        assert_eq!(Name::intern(&a), x);
        assert_eq!(Name::find(&a), Some(x));
        assert_eq!(x.bytes(), a);
        assert_eq!(Name::intern(&[0; 32]), Name::NONE);
        assert_eq!(Name::NONE.bytes(), [0; 32]);
    }

    #[test]
    fn ids_order_as_their_bytes_not_as_their_arrival() {
        let (mut late, mut early) = ([0u8; 16], [0u8; 16]);
        late[0] = 0xf1;
        early[0] = 0x01;
        let first = OuterAddr::intern(&late);
        let second = OuterAddr::intern(&early);
        assert!(first.id() < second.id());
        assert!(second < first);
        assert!(OuterAddr::NONE < second);
        assert_eq!(OuterAddr::find(&[0xee; 16]), None);
    }
}
