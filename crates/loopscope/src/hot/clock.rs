//! The hot path's clock: quanta's, read inline as the TSC where quanta counts TSC ticks.

/// quanta's clock, read on the hot path without a call: when quanta counts TSC ticks, the
/// hooks read the TSC themselves, and scale ticks to nanoseconds with a multiplier taken from
/// quanta's calibration (for quanta's monotonic fallback, whose values are nanoseconds already,
/// the multiplier is one).
pub(crate) struct HotClock {
    clock: quanta::Clock,
    tsc: bool,
    /// Nanoseconds per 2^32 ticks.
    pub(crate) mult: u64,
}

impl HotClock {
    pub(crate) fn new() -> Self {
        let clock = quanta::Clock::new();
        let tsc = reads_tsc(&clock);
        let mult = clock.delta_as_nanos(0, 1 << 32);
        HotClock { clock, tsc, mult }
    }

    /// The clock's raw value (TSC ticks or nanoseconds).
    #[inline(always)]
    pub(crate) fn raw(&self) -> u64 {
        if self.tsc { self.raw_as::<true>() } else { self.raw_as::<false>() }
    }

    /// Whether the raw values are TSC ticks read directly (see [`HotClock::raw_as`]).
    pub(crate) fn is_tsc(&self) -> bool {
        self.tsc
    }

    /// The raw value, for a caller that knows whether the clock is the TSC (`TSC` must equal
    /// [`HotClock::is_tsc`]): the hooks are compiled for one or the other, so that the hot path
    /// has neither the branch nor, on the TSC side, a call.
    #[inline(always)]
    pub(crate) fn raw_as<const TSC: bool>(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        if TSC {
            // SAFETY: quanta only counts TSC ticks on CPUs with an invariant TSC.
            return unsafe { core::arch::x86_64::_rdtsc() };
        }
        self.clock.raw()
    }

    /// Nanoseconds from raw value `start` to raw value `end` (0 if `end` is earlier).
    #[inline(always)]
    pub(crate) fn delta_as_nanos(&self, start: u64, end: u64) -> u64 {
        crate::hot::cells::scale_to_ns(end.saturating_sub(start), self.mult)
    }

    /// Raw units in `ns` nanoseconds (`u64::MAX` stays "never").
    pub(crate) fn ns_to_raw(&self, ns: u64) -> u64 {
        if ns == u64::MAX { u64::MAX } else { crate::hot::cells::ns_to_scale(ns, self.mult) }
    }
}

/// Whether quanta's raw values are the TSC's: a TSC read on either side brackets them.
fn reads_tsc(clock: &quanta::Clock) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (0..3).all(|_| {
            // SAFETY: reading the TSC has no preconditions on x86-64.
            let before = unsafe { core::arch::x86_64::_rdtsc() };
            let raw = clock.raw();
            // SAFETY: as above.
            let after = unsafe { core::arch::x86_64::_rdtsc() };
            before <= raw && raw <= after && after - before < 10_000_000
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = clock;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hot_clock_agrees_with_quanta_and_with_the_wall_clock() {
        let c = HotClock::new();
        for ticks in [0u64, 1, 1_000, 123_456_789, 3_000_000_000, 1 << 40] {
            let ours = c.delta_as_nanos(5, 5 + ticks);
            let quanta = c.clock.delta_as_nanos(5, 5 + ticks);
            assert!(ours.abs_diff(quanta) <= 1 + quanta / 1_000_000, "{ticks} ticks: {ours} vs {quanta}");
        }
        assert_eq!(c.delta_as_nanos(10, 5), 0, "a later start is no time");
        // Each raw read bracketed by wall-clock reads, so that a preemption between them widens
        // the bounds instead of failing the test.
        let a0 = std::time::Instant::now();
        let start = c.raw();
        let a1 = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b0 = std::time::Instant::now();
        let end = c.raw();
        let b1 = std::time::Instant::now();
        let ns = c.delta_as_nanos(start, end);
        let (shortest, longest) = ((b0 - a1).as_nanos() as u64, (b1 - a0).as_nanos() as u64);
        // Calibration error: 1%.
        assert!(
            ns >= shortest - shortest / 100 && ns <= longest + longest / 100,
            "{ns} ns, wall {shortest}..{longest} ns"
        );
    }

    #[test]
    fn both_compiled_clock_reads_give_the_same_clock() {
        // The hooks are compiled for one or the other; on a TSC machine both read the same
        // counter (one inline, one through quanta), elsewhere only the quanta one runs.
        let c = HotClock::new();
        if !c.is_tsc() {
            let (a, b) = (c.raw_as::<false>(), c.raw_as::<false>());
            assert!(b >= a);
            return;
        }
        let before = c.raw_as::<true>();
        let via_quanta = c.raw_as::<false>();
        let after = c.raw_as::<true>();
        assert!(before <= via_quanta && via_quanta <= after, "{before} {via_quanta} {after}");
    }
}
