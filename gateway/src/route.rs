//! The worker API paths the gateway forwards, and their templates: the only route labels metrics
//! carry, so a label's values stay bounded whatever paths clients send.

use axum::http::Method;

/// One forwarded worker route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Execute,
    Cancel,
    Input,
    Reset,
    Resolve,
    Reject,
    Stats,
    Checkpoint,
    CreateCheckpoint,
    ListCheckpoints,
    RestoreCheckpoint,
}

impl Route {
    /// Matches a method and the path after `/v1/sessions/{ns}/{name}/`. Ids are one non-empty
    /// segment; anything else is no route.
    pub fn match_suffix(method: &Method, suffix: &str) -> Option<Route> {
        let segments: Vec<&str> = suffix.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        let route = match (method, segments.as_slice()) {
            (&Method::POST, ["executions"]) => Route::Execute,
            (&Method::POST, ["executions", _, "cancel"]) => Route::Cancel,
            (&Method::POST, ["executions", _, "input"]) => Route::Input,
            (&Method::POST, ["reset"]) => Route::Reset,
            (&Method::POST, ["promises", _, "resolve"]) => Route::Resolve,
            (&Method::POST, ["promises", _, "reject"]) => Route::Reject,
            (&Method::GET, ["stats"]) => Route::Stats,
            (&Method::GET, ["checkpoint"]) => Route::Checkpoint,
            (&Method::POST, ["checkpoints"]) => Route::CreateCheckpoint,
            (&Method::GET, ["checkpoints"]) => Route::ListCheckpoints,
            (&Method::POST, ["checkpoints", _, "restore"]) => Route::RestoreCheckpoint,
            _ => return None,
        };
        Some(route)
    }

    /// The template, as metrics and logs name the route.
    pub fn template(self) -> &'static str {
        match self {
            Route::Execute => "executions",
            Route::Cancel => "executions/{id}/cancel",
            Route::Input => "executions/{id}/input",
            Route::Reset => "reset",
            Route::Resolve => "promises/{id}/resolve",
            Route::Reject => "promises/{id}/reject",
            Route::Stats => "stats",
            Route::Checkpoint => "checkpoint",
            Route::CreateCheckpoint | Route::ListCheckpoints => "checkpoints",
            Route::RestoreCheckpoint => "checkpoints/{id}/restore",
        }
    }
}

/// Splits `/v1/sessions/{namespace}/{name}/{suffix}` into its parts.
pub fn split_session_path(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/v1/sessions/")?;
    let (namespace, rest) = rest.split_once('/')?;
    let (name, suffix) = rest.split_once('/')?;
    (!namespace.is_empty() && !name.is_empty()).then_some((namespace, name, suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_route_matches_with_its_method() {
        let cases = [
            (Method::POST, "executions", Route::Execute),
            (Method::POST, "executions/e-1/cancel", Route::Cancel),
            (Method::POST, "executions/e-1/input", Route::Input),
            (Method::POST, "reset", Route::Reset),
            (Method::POST, "promises/p/resolve", Route::Resolve),
            (Method::POST, "promises/p/reject", Route::Reject),
            (Method::GET, "stats", Route::Stats),
            (Method::GET, "checkpoint", Route::Checkpoint),
            (Method::POST, "checkpoints", Route::CreateCheckpoint),
            (Method::GET, "checkpoints", Route::ListCheckpoints),
            (
                Method::POST,
                "checkpoints/latest/restore",
                Route::RestoreCheckpoint,
            ),
        ];
        for (method, suffix, route) in cases {
            assert_eq!(
                Route::match_suffix(&method, suffix),
                Some(route),
                "{suffix}"
            );
        }
    }

    #[test]
    fn other_paths_and_methods_match_nothing() {
        for (method, suffix) in [
            (Method::GET, "executions"),
            (Method::POST, "stats"),
            (Method::GET, "namespace"),
            (Method::PUT, "session"),
            (Method::POST, "executions//cancel"),
            (Method::POST, "executions/e/cancel/x"),
            (Method::POST, ""),
        ] {
            assert_eq!(
                Route::match_suffix(&method, suffix),
                None,
                "{method} {suffix}"
            );
        }
    }

    #[test]
    fn a_session_path_splits_into_namespace_name_and_suffix() {
        assert_eq!(
            split_session_path("/v1/sessions/ns/s/executions/e/cancel"),
            Some(("ns", "s", "executions/e/cancel"))
        );
        assert_eq!(split_session_path("/v1/sessions/ns/s"), None);
        assert_eq!(split_session_path("/v1/sessions//s/stats"), None);
        assert_eq!(split_session_path("/v2/sessions/ns/s/stats"), None);
    }
}
