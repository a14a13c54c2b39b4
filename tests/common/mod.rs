//! Helpers shared by the integration tests.

pub mod scipy_ref;
