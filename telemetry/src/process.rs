//! The standard `process_*` series of this process, read from `/proc` at each scrape (Linux; on
//! other systems the collector encodes nothing).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// One reading of this process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: i64,
    pub virtual_memory_bytes: i64,
    pub start_time_seconds: f64,
    pub threads: i64,
    pub open_fds: i64,
    pub max_fds: i64,
}

/// Fields of `/proc/<pid>/stat` after the command name, which may itself hold spaces and `)`.
#[derive(Debug, PartialEq)]
struct Stat {
    utime_ticks: u64,
    stime_ticks: u64,
    threads: i64,
    start_ticks: u64,
    vsize_bytes: u64,
    rss_pages: i64,
}

fn parse_stat(text: &str) -> Option<Stat> {
    let fields: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    // fields[0] is field 3 (state) of proc(5).
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        utime_ticks: field(14)?.parse().ok()?,
        stime_ticks: field(15)?.parse().ok()?,
        threads: field(20)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
        vsize_bytes: field(23)?.parse().ok()?,
        rss_pages: field(24)?.parse().ok()?,
    })
}

/// `btime` of `/proc/stat`: the boot time in seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

fn max_fds() -> i64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX)
    } else {
        0
    }
}

impl ProcessStats {
    /// Reads this process's figures, or None where `/proc` is missing.
    pub fn read() -> Option<Self> {
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
        // SAFETY: sysconf only reads configuration values.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let ticks = ticks.max(1) as f64;
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
        Some(ProcessStats {
            cpu_seconds: (stat.utime_ticks + stat.stime_ticks) as f64 / ticks,
            resident_memory_bytes: stat.rss_pages * page,
            virtual_memory_bytes: i64::try_from(stat.vsize_bytes).unwrap_or(i64::MAX),
            start_time_seconds: boot as f64 + stat.start_ticks as f64 / ticks,
            threads: stat.threads,
            open_fds,
            max_fds: max_fds(),
        })
    }
}

#[derive(Debug)]
pub struct ProcessCollector;

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = e.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        ConstCounter::new(s.cpu_seconds).encode(cpu)?;
        let bytes = Some(&Unit::Bytes);
        gauge(
            &mut e,
            "process_resident_memory",
            "Resident memory size in bytes",
            bytes,
            s.resident_memory_bytes as f64,
        )?;
        gauge(
            &mut e,
            "process_virtual_memory",
            "Virtual memory size in bytes",
            bytes,
            s.virtual_memory_bytes as f64,
        )?;
        gauge(
            &mut e,
            "process_start_time",
            "Start time of the process since unix epoch in seconds",
            Some(&Unit::Seconds),
            s.start_time_seconds,
        )?;
        gauge(
            &mut e,
            "process_threads",
            "Number of OS threads in the process",
            None,
            s.threads as f64,
        )?;
        gauge(
            &mut e,
            "process_open_fds",
            "Number of open file descriptors",
            None,
            s.open_fds as f64,
        )?;
        gauge(
            &mut e,
            "process_max_fds",
            "Maximum number of open file descriptors",
            None,
            s.max_fds as f64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 7 0 12345 104857600 2560 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime_ticks: 250,
                stime_ticks: 50,
                threads: 7,
                start_ticks: 12345,
                vsize_bytes: 104_857_600,
                rss_pages: 2560,
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1"), None);
    }

    #[test]
    fn boot_time_comes_from_the_btime_line() {
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1764547200\nprocesses 9\n"),
            Some(1_764_547_200)
        );
        assert_eq!(parse_boot_time("cpu  1 2 3\n"), None);
    }

    #[test]
    fn this_process_reads_plausible_figures() {
        let s = ProcessStats::read().expect("/proc is mounted");
        assert!(s.resident_memory_bytes > 0 && s.virtual_memory_bytes >= s.resident_memory_bytes);
        assert!(s.threads >= 1 && s.open_fds >= 3 && s.max_fds >= s.open_fds);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            s.start_time_seconds > now - 3600.0 && s.start_time_seconds <= now + 1.0,
            "{s:?}"
        );
    }
}
