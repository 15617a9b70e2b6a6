//! Status conditions whose `lastTransitionTime` moves only when their status does, so a status that
//! did not change produces no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// What a controller wants one condition to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl DesiredCondition {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status {
        "True"
    } else {
        "False"
    }
}

/// Builds the new condition list from the desired ones, keeping each condition's
/// `lastTransitionTime` from `existing` when its status is unchanged.
pub fn merge(
    existing: &[Condition],
    desired: &[DesiredCondition],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|want| {
            let status = status_str(want.status);
            let previous = existing.iter().find(|c| c.type_ == want.type_);
            let last_transition_time = match previous {
                Some(prev) if prev.status == status => prev.last_transition_time.clone(),
                _ => Time(now),
            };
            Condition {
                type_: want.type_.to_string(),
                status: status.to_string(),
                reason: want.reason.to_string(),
                message: want.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn transition_time_stays_while_status_holds() {
        let first = merge(
            &[],
            &[DesiredCondition::new(
                "Ready",
                false,
                "WarmingUp",
                "0 of 2 idle",
            )],
            Some(1),
            at(100),
        );
        assert_eq!(first[0].last_transition_time, Time(at(100)));
        let again = merge(
            &first,
            &[DesiredCondition::new(
                "Ready",
                false,
                "WarmingUp",
                "1 of 2 idle",
            )],
            Some(1),
            at(200),
        );
        assert_eq!(
            again[0].last_transition_time,
            Time(at(100)),
            "same status keeps its time"
        );
        assert_eq!(again[0].message, "1 of 2 idle");
        let flipped = merge(
            &again,
            &[DesiredCondition::new(
                "Ready",
                true,
                "WarmTargetMet",
                "2 of 2 idle",
            )],
            Some(1),
            at(300),
        );
        assert_eq!(
            flipped[0].last_transition_time,
            Time(at(300)),
            "a new status moves it"
        );
        assert_eq!(flipped[0].status, "True");
    }
}
