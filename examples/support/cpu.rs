//! CPU time of the calling thread and of the whole process, for the
//! profiling examples (included with `#[path]`; not an example itself).

/// User and system CPU time, in 10 ms clock ticks, from a `/proc/.../stat`
/// file (zeros if it cannot be read).
fn user_and_system(path: &str) -> (u64, u64) {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let mut times = rest
        .split_whitespace()
        .skip(11)
        .map(|f| f.parse::<u64>().unwrap_or(0));
    (times.next().unwrap_or(0), times.next().unwrap_or(0))
}

const THREAD: &str = "/proc/thread-self/stat";
const PROCESS: &str = "/proc/self/stat";

/// CPU time (user + system, in 10 ms clock ticks) of the calling thread
/// and of the whole process, threads that have ended included (Linux only:
/// zeros elsewhere).
pub fn cpu_ticks() -> (u64, u64) {
    let ((tu, ts), (pu, ps)) = (user_and_system(THREAD), user_and_system(PROCESS));
    (tu + ts, pu + ps)
}

/// System (kernel) CPU time, in 10 ms clock ticks, of the calling thread
/// and of the whole process (the system part of [`cpu_ticks`]; Linux
/// only: zeros elsewhere).
#[allow(dead_code, reason = "not every example that includes this uses it")]
pub fn sys_ticks() -> (u64, u64) {
    (user_and_system(THREAD).1, user_and_system(PROCESS).1)
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
