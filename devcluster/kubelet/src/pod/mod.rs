//! From Pod objects to runtime launches and back to Pod status.

pub mod env;
pub mod expand;
pub mod fields;
pub mod image_launch;
pub mod ip_pool;
pub mod launch;
pub mod mounts;
pub mod objects;
pub mod status;
pub mod volumes;
pub(crate) mod worker;
