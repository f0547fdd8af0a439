//! What changed between two tables: the figure logged on every rebuild and reported by the
//! benchmarks, and the slots that need writing.

/// Slot indices whose value differs between `old` and `new` (tables of backend ids).
pub fn changed_slots<'a>(old: &'a [u32], new: &'a [u32]) -> impl Iterator<Item = u32> + 'a {
    old.iter().zip(new).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_exactly_the_differing_slots() {
        let v: Vec<u32> = changed_slots(&[1, 2, 3, 4], &[1, 9, 3, 8]).collect();
        assert_eq!(v, [1, 3]);
    }
}
