//! A push over smart HTTP, end to end: read only the command section, authorize, let git
//! receive the pack (streamed, size-capped), then process the new git data.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`admission`] | [`Grasp::admit_push`] before git stores anything, [`Grasp::push_received`] after |
//! | [`lifecycle`] | [`PushLifecycle`]: the steps of one receive-pack request, metered once |
//! | [`receive_pack`] | [`Grasp::receive_pack`]: the lifecycle with git run here |
//! | [`answers`] | reading the command section, and the refusals `git push` prints |
//!
//! Every frontend goes through the same calls: the inline server through
//! [`Grasp::receive_pack`], grasp-proxy through a [`PushLifecycle`] around its upstream, a
//! git hook through the local API's `admit_push` / `push_received`.

pub mod admission;
pub mod answers;
pub mod lifecycle;
pub mod receive_pack;

pub use answers::{drain_allowance, read_push_commands, rejection, too_large, ReceivePackError};
pub use lifecycle::{Admitted, PushLifecycle};
