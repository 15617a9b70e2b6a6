//! RSS and CPU of the worker and its interpreter, read from /proc (Linux).

use std::time::Instant;

/// Linux reports CPU time in /proc/<pid>/stat in USER_HZ ticks, which is 100 on every architecture
/// the kernel exposes to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// The key of the interpreter container's reading among pids: no pid reaches it.
const CONTAINER_READING: u32 = u32::MAX;

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
    read_cpu_ticks(pid).unwrap_or(0)
}

/// User + system CPU ticks consumed by `pid` so far, None if unreadable (gone).
pub fn read_cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields are counted after its closing paren.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks in milliseconds.
pub fn ticks_to_millis(ticks: u64) -> u64 {
    (ticks as f64 * 1000.0 / TICKS_PER_SECOND) as u64
}

/// Turns successive tick readings into a CPU percentage (100 = one core busy), and the ticks of
/// the worker's processes into a total that survives interpreter resets.
#[derive(Debug)]
pub struct CpuSampler {
    last: Option<(Instant, u64)>,
    total: CpuAccumulator,
}

impl CpuSampler {
    pub fn new() -> Self {
        CpuSampler {
            last: None,
            total: CpuAccumulator::default(),
        }
    }

    /// Reads the ticks of `pids` (0: none), adds those an interpreter container reported, and
    /// returns the accumulated total.
    pub fn read_total(&mut self, pids: &[u32], container: Option<u64>) -> u64 {
        let readings: Vec<(u32, Option<u64>)> = pids
            .iter()
            .map(|&pid| (pid, read_cpu_ticks(&pid.to_string())))
            .chain(container.map(|ticks| (CONTAINER_READING, Some(ticks))))
            .collect();
        self.total.record(&readings)
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

/// CPU ticks of a changing set of processes (the worker, its interpreter, the standby, the fork
/// server), summed into a total that never goes down: an interpreter reset swaps in a new pid,
/// and the ticks the old one had used at its last reading stay counted. Work a process did
/// between its last reading and its exit is not seen.
#[derive(Debug, Default)]
pub struct CpuAccumulator {
    /// Last reading of each process read last time (at most the handful of pids passed in).
    current: std::collections::BTreeMap<u32, u64>,
    /// Ticks of processes no longer read.
    retired: u64,
}

impl CpuAccumulator {
    /// Records one reading per live pid (`None`: unreadable this time, its last reading kept);
    /// returns the total ticks so far.
    pub fn record(&mut self, readings: &[(u32, Option<u64>)]) -> u64 {
        let mut next = std::collections::BTreeMap::new();
        for &(pid, ticks) in readings.iter().filter(|(pid, _)| *pid != 0) {
            let before = self.current.remove(&pid);
            let ticks = match (before, ticks) {
                // Fewer ticks under the same pid: another process got it; the old one's count.
                (Some(before), Some(now)) if now < before => {
                    self.retired += before;
                    now
                }
                (before, Some(now)) => now.max(before.unwrap_or(0)),
                (before, None) => before.unwrap_or(0),
            };
            next.insert(pid, ticks);
        }
        // Whatever was not read this time is gone: its last reading is kept.
        self.retired += self.current.values().sum::<u64>();
        self.current = next;
        self.retired + self.current.values().sum::<u64>()
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
        assert_eq!(read_cpu_ticks("999999999"), None);
    }

    #[test]
    fn accumulated_ticks_survive_an_interpreter_swap() {
        let mut cpu = CpuAccumulator::default();
        // The worker (1), its interpreter (10) and the standby (11).
        assert_eq!(
            cpu.record(&[(1, Some(5)), (10, Some(40)), (11, Some(2))]),
            47
        );
        // A reset: 10 is gone, the standby 11 now runs the session, 12 is the new standby.
        assert_eq!(
            cpu.record(&[(1, Some(6)), (11, Some(30)), (12, Some(1))]),
            6 + 40 + 30 + 1
        );
        // A pid reused by a process with fewer ticks: the old count stays.
        assert_eq!(
            cpu.record(&[(1, Some(7)), (11, Some(31)), (12, Some(0))]),
            7 + 40 + 31 + 1
        );
        // Unreadable for one reading: its last reading holds, nothing counted twice after.
        assert_eq!(
            cpu.record(&[(1, None), (11, Some(35)), (12, Some(3))]),
            7 + 40 + 35 + 1 + 3
        );
        assert_eq!(
            cpu.record(&[(1, Some(9)), (11, Some(35)), (12, Some(3))]),
            9 + 40 + 35 + 1 + 3
        );
        // Pid 0 (no standby yet) is not a process.
        assert_eq!(
            cpu.record(&[(1, Some(9)), (11, Some(35)), (12, Some(3)), (0, Some(99))]),
            88
        );
    }
}
