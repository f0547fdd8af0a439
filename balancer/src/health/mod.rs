//! Active health checks: what a check does (`probe`), when its result changes a backend's
//! state (`Tracker`, `HAProxy`'s rise/fall), and the tasks that run them (`scheduler`).
//!
//! Probe results are kept apart from the administrative state (`active`/`drain`/`stopped`):
//! `dataplane::plan` combines the two.

pub mod probe;
pub mod scheduler;
pub mod tunnel;

/// Consecutive results needed to change state, and the state they produce.
///
/// A backend starts up (as in `HAProxy`), so a daemon that starts or reloads does not take a
/// healthy fleet out of service while waiting for `rise` checks.
#[derive(Debug, Clone)]
pub struct Tracker {
    up: bool,
    streak: u32,
    rise: u32,
    fall: u32,
}

impl Tracker {
    /// A tracker for a backend believed up.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self::starting(true, rise, fall)
    }

    /// A tracker for a backend believed `up` or down: a check that replaces another goes on
    /// from where the old one left the backend.
    pub fn starting(up: bool, rise: u32, fall: u32) -> Self {
        Self { up, streak: 0, rise: rise.max(1), fall: fall.max(1) }
    }

    /// Whether the backend is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one result; returns the new state when it flipped.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            return Some(ok);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_after_fall_failures_in_a_row_and_up_after_rise_successes() {
        let mut t = Tracker::new(2, 3);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(false));
        assert!(!t.is_up());
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(true));
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut t = Tracker::new(2, 2);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None);
        assert!(t.is_up(), "two failures, but not in a row");
    }
}
