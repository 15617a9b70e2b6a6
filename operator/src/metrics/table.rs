//! The macro behind the metrics table: one row per family names its field, type, constructor,
//! exposed name and help, so a family cannot be declared without being registered.

/// Declares `Metrics` with one public field per row and `Metrics::register`, which builds each
/// family (with `= constructor` where the default does not fit) and registers it as
/// `capsule_<name>`, in the rows' order.
macro_rules! metrics {
    ($($field:ident: $ty:ty $(= $new:expr)?, $name:literal, $help:literal;)*) => {
        /// The operator's metrics.
        pub struct Metrics {
            $(pub $field: $ty,)*
        }

        impl Metrics {
            /// Creates the metrics and registers them in `registry`.
            pub fn register(registry: &mut Registry) -> Self {
                let m = Self {
                    $($field: $crate::metrics::table::metrics!(@new $($new)?),)*
                };
                let r = registry.sub_registry_with_prefix("capsule");
                $(r.register($name, $help, m.$field.clone());)*
                m
            }
        }
    };
    (@new) => {
        Family::default()
    };
    (@new $new:expr) => {
        $new
    };
}

pub(super) use metrics;
