//! `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` for spans a process assembles itself (the
//! sidecar builds each execution's span from trace events, outside the SDK's samplers).

use crate::otlp::EnvError;

/// The samplers of the OpenTelemetry specification's environment variables.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// Keeps a share (0.0..=1.0) of traces, decided by the trace id alone, so every process of
    /// one trace decides the same way.
    TraceIdRatio(f64),
    /// Follows a remote parent's sampled flag; the root sampler decides for spans without one.
    ParentBased(Box<Sampler>),
}

impl Sampler {
    /// Parses the two variables (`None` = unset); the default is `parentbased_always_on`.
    pub fn parse(name: Option<&str>, arg: Option<&str>) -> Result<Sampler, EnvError> {
        let ratio = || -> Result<f64, EnvError> {
            let Some(arg) = arg else { return Ok(1.0) };
            match arg.parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(EnvError {
                    variable: "OTEL_TRACES_SAMPLER_ARG",
                    message: format!("{arg:?} is not a ratio; give a number from 0 to 1"),
                }),
            }
        };
        let parent_based = |root| Ok(Sampler::ParentBased(Box::new(root)));
        match name.unwrap_or("parentbased_always_on") {
            "always_on" => Ok(Sampler::AlwaysOn),
            "always_off" => Ok(Sampler::AlwaysOff),
            "traceidratio" => Ok(Sampler::TraceIdRatio(ratio()?)),
            "parentbased_always_on" => parent_based(Sampler::AlwaysOn),
            "parentbased_always_off" => parent_based(Sampler::AlwaysOff),
            "parentbased_traceidratio" => parent_based(Sampler::TraceIdRatio(ratio()?)),
            other => Err(EnvError {
                variable: "OTEL_TRACES_SAMPLER",
                message: format!(
                    "unsupported sampler {other:?}; accepted: always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
                ),
            }),
        }
    }

    /// Whether a span of `trace_id` is kept; `parent_sampled` is a remote parent's sampled flag.
    pub fn should_sample(&self, trace_id: [u8; 16], parent_sampled: Option<bool>) -> bool {
        match self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::TraceIdRatio(ratio) => {
                // The SDK's rule: the low 63 bits of the id's last 8 bytes under ratio * 2^63.
                let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes")) >> 1;
                (low as f64) < ratio * (1u64 << 63) as f64
            }
            Sampler::ParentBased(root) => {
                parent_sampled.unwrap_or_else(|| root.should_sample(trace_id, None))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(low: u64) -> [u8; 16] {
        let mut id = [0xab; 16];
        id[8..].copy_from_slice(&low.to_be_bytes());
        id
    }

    #[test]
    fn the_default_follows_the_parent_and_keeps_roots() {
        let s = Sampler::parse(None, None).unwrap();
        assert!(s.should_sample(id(u64::MAX), None));
        assert!(!s.should_sample(id(0), Some(false)));
        assert!(s.should_sample(id(0), Some(true)));
    }

    #[test]
    fn a_ratio_keeps_ids_below_its_share_whatever_the_parent_says() {
        let s = Sampler::parse(Some("traceidratio"), Some("0.5")).unwrap();
        assert!(s.should_sample(id(0), Some(false)));
        assert!(s.should_sample(id(3 << 61), None));
        assert!(!s.should_sample(id(1 << 63), None));
        assert!(!s.should_sample(id(u64::MAX), Some(true)));
        let kept = (0..1000u64)
            .filter(|i| s.should_sample(id(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)), None))
            .count();
        assert!((400..600).contains(&kept), "{kept}");
    }

    #[test]
    fn always_off_and_parent_based_always_off_drop_roots() {
        assert!(!Sampler::parse(Some("always_off"), None)
            .unwrap()
            .should_sample(id(0), Some(true)));
        let s = Sampler::parse(Some("parentbased_always_off"), None).unwrap();
        assert!(!s.should_sample(id(0), None));
        assert!(s.should_sample(id(0), Some(true)));
    }

    #[test]
    fn bad_values_name_the_variable_and_what_is_accepted() {
        let e = Sampler::parse(Some("sometimes"), None).unwrap_err();
        assert_eq!(e.variable, "OTEL_TRACES_SAMPLER");
        assert!(e.to_string().contains("accepted: always_on"), "{e}");
        let e = Sampler::parse(Some("traceidratio"), Some("1.5")).unwrap_err();
        assert_eq!(e.variable, "OTEL_TRACES_SAMPLER_ARG");
        assert!(e.to_string().contains("from 0 to 1"), "{e}");
    }
}
