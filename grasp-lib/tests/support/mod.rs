//! Helpers shared by grasp-lib's integration tests.

pub mod postgres;
