//! CPU time of the calling thread and of the whole process, for the
//! profiling examples (included with `#[path]`; not an example itself).

/// CPU time (user + system, in 10 ms clock ticks) of the calling thread
/// and of the whole process, threads that have ended included (Linux only:
/// zeros elsewhere).
pub fn cpu_ticks() -> (u64, u64) {
    let ticks = |path: &str| -> u64 {
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        rest.split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse::<u64>().ok())
            .sum()
    };
    (ticks("/proc/thread-self/stat"), ticks("/proc/self/stat"))
}

/// System (kernel) CPU time, in 10 ms clock ticks, of the calling thread
/// and of the whole process (the `stime` part of [`cpu_ticks`]; Linux
/// only: zeros elsewhere).
#[allow(dead_code, reason = "not every example that includes this uses it")]
pub fn sys_ticks() -> (u64, u64) {
    let ticks = |path: &str| -> u64 {
        let stat = std::fs::read_to_string(path).unwrap_or_default();
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        rest.split_whitespace()
            .nth(12)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks("/proc/thread-self/stat"), ticks("/proc/self/stat"))
}

/// Bytes the process has passed to write system calls so far (`wchar` of
/// `/proc/self/io`; Linux only: zero elsewhere).
#[allow(dead_code, reason = "not every example that includes this uses it")]
pub fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
