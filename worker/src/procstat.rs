//! RSS and CPU of the worker and its interpreter, read from /proc (Linux).

use std::time::Instant;

/// Linux reports CPU time in /proc/<pid>/stat in USER_HZ ticks, which is 100 on every architecture
/// the kernel exposes to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// Resident set size of `pid` ("self" for this process) in bytes, 0 if unreadable.
pub fn rss_bytes(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix("VmRSS:")?;
                let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
                Some(kib * 1024)
            })
        })
        .unwrap_or(0)
}

/// User + system CPU ticks consumed by `pid` so far, 0 if unreadable.
pub fn cpu_ticks(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The command name may contain spaces; fields are counted after its closing paren.
            let after = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0)
}

/// Turns successive tick readings into a CPU percentage (100 = one core busy).
#[derive(Debug)]
pub struct CpuSampler {
    last: Option<(Instant, u64)>,
}

impl CpuSampler {
    pub fn new() -> Self {
        CpuSampler { last: None }
    }

    /// CPU % since the previous sample (0 on the first).
    pub fn sample(&mut self, ticks: u64) -> f64 {
        let now = Instant::now();
        let percent = match self.last {
            Some((then, before)) => {
                let seconds = now.duration_since(then).as_secs_f64();
                if seconds <= 0.0 {
                    0.0
                } else {
                    (ticks.saturating_sub(before) as f64 / TICKS_PER_SECOND) / seconds * 100.0
                }
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        percent
    }
}

impl Default for CpuSampler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        assert!(rss_bytes("self") > 0);
        let start = cpu_ticks("self");
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_add(i ^ (x >> 3));
        }
        std::hint::black_box(x);
        assert!(cpu_ticks("self") >= start);
        assert_eq!(rss_bytes("999999999"), 0);
    }
}
