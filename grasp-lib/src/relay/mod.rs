//! The Nostr relay engine: NIP-01 (EVENT/REQ/CLOSE), NIP-45 COUNT and NIP-77 negentropy,
//! independent of any transport.
//!
//! A [`Relay`] owns what all connections share (store, policy, live fan-out, limits). A
//! [`Session`] is one client: it turns client message text into relay message text. The
//! [`connection::drive`] loop joins a session to any stream/sink pair, so warp websockets,
//! a proxy, or a test harness host the same engine.

mod answer;
pub mod connection;
pub mod engine;
mod gate;
mod negentropy;
pub mod peers;
mod session;
pub mod wire;

pub use engine::{IngestOutcome, Relay, RelayLimits};
pub use session::Session;
pub use wire::{CLIENT_MESSAGE_TYPES, MAX_SUBSCRIPTION_ID_LEN};
