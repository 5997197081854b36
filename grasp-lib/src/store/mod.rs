//! The event store: what the relay serves. LMDB on disk by default, PostgreSQL for several
//! nodes on one database, memory for tests.
//!
//! [`EventStore`] wraps `nostr-database`; [`Publisher`] saves an event and delivers it to
//! live subscribers in one step, for the relay (client EVENTs) and purgatory (released
//! events) alike.

pub mod events;
pub mod live;
pub mod postgres;
pub mod publisher;

pub use events::{EventStore, StoreBackend, StoreError};
pub use live::{LiveEvent, LiveFeed, LiveReceiver, QueueBudget};
pub use publisher::Publisher;
