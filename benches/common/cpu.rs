//! What the benches share: the process's CPU time.

use std::time::Duration;

/// The process's CPU time so far (user + system), from `/proc/self/stat`.
pub(crate) fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which ends with the last ')'): utime is the 12th,
    // stime the 13th, in clock ticks: USER_HZ, which Linux fixes at 100 per second for
    // what it reports to user space, whatever the kernel's own tick.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
