//! The pure decisions of hosting.
