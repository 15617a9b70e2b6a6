//! The two exposition formats of `/metrics`: OpenMetrics for scrapers that ask for it, else the
//! classic Prometheus text format (0.0.4), which `promtool check metrics` reads: no `# EOF`, no
//! `# UNIT`, counter families named with their `_total` suffix.

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Converts prometheus-client's OpenMetrics output into the Prometheus 0.0.4 text format.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        match line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            Some(rest) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{}{name}_total {tail}", &line[..7]));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_get_their_total_names() {
        let om = "# HELP c Things.\n# TYPE c counter\n# UNIT g bytes\nc_total 1\n# EOF\n";
        assert_eq!(
            super::to_prometheus_text(om),
            "# HELP c_total Things.\n# TYPE c_total counter\nc_total 1\n"
        );
    }
}
