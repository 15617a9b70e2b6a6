//! The two exposition formats of /metrics. prometheus-client writes OpenMetrics (which carries the
//! exemplars); scrapers and tools that ask for the classic Prometheus text format (0.0.4), such as
//! `promtool check metrics`, get the same samples converted: no exemplars, no `# EOF`, and counter
//! families named with their `_total` suffix as that format expects.

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header prefers OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// Converts OpenMetrics text as prometheus-client writes it into the Prometheus 0.0.4 text format.
pub fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let keyword = &line[..7];
            if counters.contains(name) {
                format!("{keyword}{name}_total {tail}")
            } else {
                line.to_string()
            }
        } else {
            // A sample: drop its exemplar, if any.
            match line.find(" # {") {
                Some(at) => line[..at].to_string(),
                None => line.to_string(),
            }
        };
        out.push_str(&rewritten);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_total_names_and_exemplars_go() {
        let om = "# HELP c Things.\n# TYPE c counter\nc_total 1\n# TYPE h histogram\nh_bucket{le=\"1\"} 1 # {trace_id=\"ab\"} 0.5\n# EOF\n";
        let text = openmetrics_to_prometheus_text(om);
        assert_eq!(text, "# HELP c_total Things.\n# TYPE c_total counter\nc_total 1\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n");
    }
}
