//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016, §3.4), without any I/O.
//!
//! Each backend walks its own permutation of the table's slots and, taking turns, claims the next
//! free slot on its walk until the table is full. Weights change how often a backend gets a turn:
//! every round each backend earns credit equal to its weight, and spends `max_weight` credit per
//! slot, so shares follow weights to within one slot per backend. Weight 0 takes no slots.
//!
//! The table depends only on the backends' identities, weights, the table size and the seed — not
//! on the order backends are listed in — so every balancer node with the same configuration builds
//! the same table, which is what lets several nodes sit behind ECMP.

use balancer_common::maps::MAX_RING_SIZE;

/// Default table size: the Maglev paper's prime, large enough that 100s of backends get an even
/// share and one departure moves little more than its own share.
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Smallest table: each slot is a share of about 1 %, the coarsest a weight can be set in.
pub const MIN_RING_SIZE: u32 = 97;

/// Default seed of the permutations. Nodes that must agree use the same one.
pub const DEFAULT_SEED: u64 = 0x6d61_676c_6576;

/// Why a table size is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingSizeError {
    /// Maglev needs a prime so every permutation visits every slot.
    #[error("ring size {0} is not a prime (65537, 16381, 4093, 1021 and 251 are)")]
    NotPrime(u32),
    /// Too few slots to spread flows by weight.
    #[error("ring size {size} is too small to spread flows by weight: at least {min} (65537 is the default)")]
    TooSmall {
        /// The size asked for.
        size: u32,
        /// `MIN_RING_SIZE`.
        min: u32,
    },
    /// Larger than the largest table the ring map can hold for one VIP.
    #[error("ring size {size} is larger than the maximum {max}")]
    TooLarge {
        /// The size asked for.
        size: u32,
        /// `MAX_RING_SIZE`.
        max: u32,
    },
}

/// A Maglev table size: a prime no larger than `MAX_RING_SIZE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSize(u32);

impl RingSize {
    /// Checks that `size` is usable as a Maglev table size.
    ///
    /// # Errors
    /// `NotPrime` or `TooLarge`.
    pub fn new(size: u32) -> Result<Self, RingSizeError> {
        if size < MIN_RING_SIZE {
            return Err(RingSizeError::TooSmall { size, min: MIN_RING_SIZE });
        }
        if size > MAX_RING_SIZE {
            return Err(RingSizeError::TooLarge { size, max: MAX_RING_SIZE });
        }
        if !is_prime(size) {
            return Err(RingSizeError::NotPrime(size));
        }
        Ok(Self(size))
    }

    /// The number of slots.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for RingSize {
    fn default() -> Self {
        Self(DEFAULT_RING_SIZE)
    }
}

fn is_prime(n: u32) -> bool {
    n >= 2 && (2..=n.isqrt()).all(|d| !n.is_multiple_of(d))
}

/// One backend as the table builder sees it.
#[derive(Clone, Debug)]
pub struct Member {
    /// What identifies the backend across nodes and restarts (its address and port, say). Two
    /// members must not share an identity.
    pub identity: Vec<u8>,
    /// Relative share of new flows; 0 takes none.
    pub weight: u32,
}

/// A full Maglev table: slot → index into the member list it was built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    slots: Vec<u32>,
}

impl Table {
    /// The member index in each slot.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// How many slots each of `members` members holds.
    pub fn counts(&self, members: usize) -> Vec<u32> {
        let mut counts = vec![0; members];
        for &m in &self.slots {
            counts[m as usize] += 1;
        }
        counts
    }
}

/// Builds the table for `members`, or `None` when no member has weight (nothing may take new
/// flows).
///
/// # Panics
/// If more members have weight than the table has slots; `RingSize` keeps that out of reach
/// for the backend counts the maps allow (`MAX_BACKENDS` < every accepted size but the
/// smallest primes, which callers reject with a clear error first).
pub fn build(members: &[Member], size: RingSize, seed: u64) -> Option<Table> {
    let m = size.get();
    let max_weight = members.iter().map(|b| b.weight).max().filter(|&w| w > 0)?;
    // Visit members in identity order, so the listing order in the config does not matter.
    let mut order: Vec<usize> = (0..members.len()).filter(|&i| members[i].weight > 0).collect();
    order.sort_by(|&a, &b| members[a].identity.cmp(&members[b].identity));
    assert!(order.len() as u64 <= u64::from(m), "more weighted members than ring slots");

    let mut walk: Vec<(u32, u32)> = order
        .iter()
        .map(|&i| {
            let (h1, h2) = permutation_hashes(&members[i].identity, seed);
            let offset = (h1 % u64::from(m)) as u32;
            let skip = (h2 % u64::from(m - 1)) as u32 + 1;
            (offset, skip)
        })
        .collect();
    let mut credit = vec![0u64; order.len()];
    const EMPTY: u32 = u32::MAX;
    let mut slots = vec![EMPTY; m as usize];
    let mut filled = 0u32;
    'fill: loop {
        for (k, &i) in order.iter().enumerate() {
            credit[k] += u64::from(members[i].weight);
            if credit[k] < u64::from(max_weight) {
                continue;
            }
            credit[k] -= u64::from(max_weight);
            let (pos, skip) = &mut walk[k];
            // `skip` is in 1..m and m is prime, so the walk reaches every slot: this ends.
            while slots[*pos as usize] != EMPTY {
                *pos = (*pos + *skip) % m;
            }
            slots[*pos as usize] = i as u32;
            *pos = (*pos + *skip) % m;
            filled += 1;
            if filled == m {
                break 'fill;
            }
        }
    }
    Some(Table { slots })
}

/// What a member of a [`build_stable`] table may take now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Now {
    /// Its weight now (0 while it is down, drained or outside the group taking new flows).
    pub weight: u32,
    /// The share of its own slots of the configured table it holds now: 1 normally, less while
    /// it ramps up after a slow start, ignored when `weight` is 0.
    pub keep: f64,
}

/// A table that moves only what changed: `members` carry their configured weights, `now`
/// (one per member) what each may take at the moment. A slot stays with its member of the
/// table built from the configured weights while that member takes new flows (and, while it
/// ramps, for the `keep` share of its slots a per-slot hash selects); every other slot takes
/// the member of the table built from the weights of `now`.
///
/// So a backend that goes down moves exactly its own slots, spread over the others by weight,
/// and takes exactly them back when it returns, where rebuilding from the new weights would move
/// several times that as the fill cascades (3/N at M=1000003 and 6.5/N at 65537 for one of
/// 1000). The result depends only on both weight sets, the size and the seed, so nodes that
/// agree on health agree on the table.
///
/// # Panics
/// As [`build`]; also if `now` is not one entry per member.
pub fn build_stable(members: &[Member], now: &[Now], size: RingSize, seed: u64) -> Option<Table> {
    assert_eq!(members.len(), now.len(), "one `now` per member");
    let live: Vec<Member> =
        members.iter().zip(now).map(|(m, n)| Member { identity: m.identity.clone(), weight: n.weight }).collect();
    let current = build(&live, size, seed)?;
    let settled = members.iter().zip(now).all(|(m, n)| m.weight == n.weight && n.keep >= 1.0);
    if settled {
        return Some(current);
    }
    let Some(configured) = build(members, size, seed) else { return Some(current) };
    // A ramping member's own slots that it does not hold yet go to the others: in `current`
    // it would win back most of them, since a lighter member still claims its first choices.
    let ramping = |n: &Now| n.weight > 0 && n.keep < 1.0;
    let without_ramping = now.iter().any(ramping).then(|| {
        let others: Vec<Member> = live
            .iter()
            .zip(now)
            .map(|(m, n)| Member { identity: m.identity.clone(), weight: if ramping(n) { 0 } else { m.weight } })
            .collect();
        build(&others, size, seed)
    });
    let slots = configured
        .slots
        .iter()
        .zip(&current.slots)
        .enumerate()
        .map(|(slot, (&home, &now_there))| {
            let n = now[home as usize];
            let kept = n.weight > 0 && (n.keep >= 1.0 || slot_fraction(slot, seed) < n.keep);
            match (&without_ramping, kept) {
                (_, true) => home,
                (Some(Some(others)), false) if now_there == home => others.slots[slot],
                _ => now_there,
            }
        })
        .collect();
    Some(Table { slots })
}

/// A fixed pseudo-random number in [0, 1) per slot: which slots a ramping member holds. A
/// larger `keep` holds a superset of a smaller one's, so a ramp only ever adds slots.
fn slot_fraction(slot: usize, seed: u64) -> f64 {
    (splitmix(slot as u64 ^ seed.rotate_left(17)) >> 11) as f64 / (1u64 << 53) as f64
}

/// Two independent 64-bit hashes of an identity (FNV-1a, then the splitmix64 finaliser with two
/// different seeds). Hand-written so the result never changes with a Rust or crate upgrade.
fn permutation_hashes(identity: &[u8], seed: u64) -> (u64, u64) {
    let h = fnv1a(identity);
    (splitmix(h ^ seed), splitmix(h ^ seed.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15))
}

/// 64-bit FNV-1a: the stable hash of identities here and of session keys in the L7 layer
/// (the same on every node, release and platform).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Member { identity: format!("10.0.{}.{}:80", i / 256, i % 256).into_bytes(), weight })
            .collect()
    }

    #[test]
    fn every_slot_is_filled_with_a_weighted_member() {
        let ms = members(&[3, 0, 1, 7]);
        let t = build(&ms, RingSize::new(251).unwrap(), DEFAULT_SEED).unwrap();
        assert_eq!(t.slots().len(), 251);
        assert!(t.slots().iter().all(|&s| (s as usize) < ms.len() && s != 1));
    }

    #[test]
    fn no_weight_means_no_table() {
        assert!(build(&members(&[0, 0]), RingSize::default(), DEFAULT_SEED).is_none());
        assert!(build(&[], RingSize::default(), DEFAULT_SEED).is_none());
    }

    #[test]
    fn table_ignores_listing_order_and_repeats_exactly() {
        let ms = members(&[1, 2, 3, 4, 5]);
        let mut rev = ms.clone();
        rev.reverse();
        let a = build(&ms, RingSize::default(), DEFAULT_SEED).unwrap();
        let b = build(&rev, RingSize::default(), DEFAULT_SEED).unwrap();
        // Same backend in every slot, though the member indices differ.
        let n = ms.len() as u32;
        assert!(a.slots().iter().zip(b.slots()).all(|(&x, &y)| x == n - 1 - y));
        assert_eq!(a, build(&ms, RingSize::default(), DEFAULT_SEED).unwrap());
    }

    #[test]
    fn a_different_seed_gives_a_different_table() {
        let ms = members(&[1, 1, 1]);
        let a = build(&ms, RingSize::default(), 1).unwrap();
        let b = build(&ms, RingSize::default(), 2).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn slot_share_is_within_one_percent_of_weight_share_for_100_backends() {
        let weights: Vec<u32> = (0..100).map(|i| 1 + i % 10).collect();
        let ms = members(&weights);
        let t = build(&ms, RingSize::default(), DEFAULT_SEED).unwrap();
        let total: u32 = weights.iter().sum();
        let mut worst = 0f64;
        for (i, &c) in t.counts(ms.len()).iter().enumerate() {
            let want = f64::from(DEFAULT_RING_SIZE) * f64::from(weights[i]) / f64::from(total);
            worst = worst.max((f64::from(c) - want).abs() / want);
        }
        eprintln!("worst relative share error, 100 backends at M=65537: {:.3}%", worst * 100.0);
        assert!(worst <= 0.01, "worst share error {worst}");
    }

    /// The share of a table of `size` whose backend changes when the first of `n` equal
    /// backends leaves, compared by identity.
    fn moved_when_one_leaves(n: usize, size: RingSize) -> f64 {
        let ms = members(&vec![1; n]);
        let before = build(&ms, size, DEFAULT_SEED).unwrap();
        let after = build(&ms[1..], size, DEFAULT_SEED).unwrap();
        let moved = before
            .slots()
            .iter()
            .zip(after.slots())
            .filter(|&(&b, &a)| ms[b as usize].identity != ms[1 + a as usize].identity)
            .count();
        moved as f64 / f64::from(size.get())
    }

    #[test]
    fn removing_one_of_n_moves_close_to_one_nth_of_slots() {
        for n in [10usize, 100] {
            let frac = moved_when_one_leaves(n, RingSize::default());
            eprintln!("removing 1 of {n}: {:.4} of slots moved ({:.3} × 1/N)", frac, frac * n as f64);
            // The departed backend's own slots (1/N) must move. The permutation fill moves some
            // more as the freed slots cascade: 1.02/N at N=10 and 1.52/N at N=100 with M=65537,
            // the price of Maglev's exact balance (the paper's §5.3 shows the same effect).
            assert!(frac >= 1.0 / n as f64 - 0.001 && frac <= 1.6 / n as f64, "moved {frac}");
        }
    }

    /// Issue 14: at M=65537 a fleet of 1000 moves 6.5/N of the slots when one leaves (the fill's
    /// cascade grows with N/M); a table of 1,000,003 slots halves that. (Measured with this
    /// fill: 5.87/N at 262147, 3.08/N at 1000003, 1.85/N at 4000037, 1.35/N at 16000057.)
    #[test]
    fn a_large_table_keeps_one_departure_of_a_thousand_near_one_nth() {
        let n = 1000;
        let per_n = moved_when_one_leaves(n, RingSize::new(1_000_003).unwrap()) * n as f64;
        eprintln!("removing 1 of {n} at M=1000003: {per_n:.3} × 1/N of the slots moved");
        assert!((1.0..=3.2).contains(&per_n), "moved {per_n} × 1/N");
    }

    fn all_now(ms: &[Member]) -> Vec<Now> {
        ms.iter().map(|m| Now { weight: m.weight, keep: 1.0 }).collect()
    }

    /// Issue 14: one of 1000 backends going down (health, `stopped`, drain) moves exactly its
    /// own slots, 1.0/N, where a rebuild moves 3.08/N at this size; coming back restores the
    /// configured table slot for slot.
    #[test]
    fn a_backend_going_down_moves_only_its_own_slots_and_takes_them_back() {
        let size = RingSize::new(1_000_003).unwrap();
        let ms = members(&vec![1; 1000]);
        let all = build_stable(&ms, &all_now(&ms), size, DEFAULT_SEED).unwrap();
        assert_eq!(all, build(&ms, size, DEFAULT_SEED).unwrap());
        let mut now = all_now(&ms);
        now[0].weight = 0;
        let down = build_stable(&ms, &now, size, DEFAULT_SEED).unwrap();
        let moved = all.slots().iter().zip(down.slots()).filter(|(a, b)| a != b).count();
        let own = all.counts(ms.len())[0] as usize;
        eprintln!("one of 1000 down at M=1000003: {:.3} × 1/N moved", moved as f64 * 1000.0 / 1_000_003.0);
        assert_eq!(moved, own, "only the departed backend's slots move");
        assert!(down.slots().iter().all(|&m| m != 0));
        // Its slots are spread over the others as evenly as a table of the live ones spreads.
        let counts = down.counts(ms.len());
        let (lo, hi) = (counts[1..].iter().min().unwrap(), counts[1..].iter().max().unwrap());
        assert!(f64::from(*hi) / f64::from(*lo) < 1.01, "shares {lo}..{hi}");
        now[0].weight = 1;
        assert_eq!(build_stable(&ms, &now, size, DEFAULT_SEED).unwrap(), all);
    }

    #[test]
    fn shares_follow_weights_while_some_are_down() {
        let ms = members(&[1, 2, 3, 4, 5, 6]);
        let mut now = all_now(&ms);
        now[1].weight = 0;
        now[4].weight = 0;
        let t = build_stable(&ms, &now, RingSize::default(), DEFAULT_SEED).unwrap();
        let c = t.counts(ms.len());
        assert_eq!((c[1], c[4]), (0, 0));
        let live: u32 = [1, 3, 4, 6].iter().sum();
        for j in [0usize, 2, 3, 5] {
            let want = f64::from(DEFAULT_RING_SIZE) * f64::from(ms[j].weight) / f64::from(live);
            assert!((f64::from(c[j]) / want - 1.0).abs() < 0.01, "member {j}: {} of {want}", c[j]);
        }
        for n in &mut now {
            n.weight = 0;
        }
        assert!(build_stable(&ms, &now, RingSize::default(), DEFAULT_SEED).is_none());
    }

    /// A ramping backend holds the `keep` share of its own slots, and a later step of the ramp
    /// holds a superset of an earlier one's: a ramp only adds slots to it.
    #[test]
    fn a_ramping_backend_holds_a_growing_share_of_its_own_slots() {
        let ms = members(&[100; 10]);
        let size = RingSize::default();
        let own = build(&ms, size, DEFAULT_SEED).unwrap().counts(10)[3];
        let step = |keep: f64| {
            let mut now = all_now(&ms);
            now[3] = Now { weight: scaled(keep), keep };
            build_stable(&ms, &now, size, DEFAULT_SEED).unwrap()
        };
        let (quarter, half) = (step(0.25), step(0.5));
        let held = |t: &Table| t.counts(10)[3];
        assert!((f64::from(held(&quarter)) / f64::from(own) - 0.25).abs() < 0.02, "{} of {own}", held(&quarter));
        assert!((f64::from(held(&half)) / f64::from(own) - 0.5).abs() < 0.02, "{} of {own}", held(&half));
        let home = build(&ms, size, DEFAULT_SEED).unwrap();
        let kept = |t: &Table, s: usize| t.slots()[s] == 3 && home.slots()[s] == 3;
        assert!((0..home.slots().len()).all(|s| !kept(&quarter, s) || kept(&half, s)));
    }

    fn scaled(keep: f64) -> u32 {
        ((100.0 * keep).ceil() as u32).max(1)
    }

    #[test]
    fn higher_weight_gets_proportionally_more_slots() {
        let t = build(&members(&[1, 3]), RingSize::default(), DEFAULT_SEED).unwrap();
        let c = t.counts(2);
        assert!((f64::from(c[1]) / f64::from(c[0]) - 3.0).abs() < 0.01, "{c:?}");
    }

    #[test]
    fn ring_size_must_be_a_prime_within_the_map() {
        assert_eq!(RingSize::new(65536), Err(RingSizeError::NotPrime(65536)));
        assert_eq!(RingSize::new(131_071).unwrap().get(), 131_071);
        assert!(matches!(RingSize::new(1_000_037), Err(RingSizeError::TooLarge { .. })));
        assert_eq!(RingSize::new(4093).unwrap().get(), 4093);
    }
}
