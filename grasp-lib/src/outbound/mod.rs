//! The outbound target policy (decision 28): everything the server dials because an event
//! named it — hunting's git fetches, pull request clone URLs, relay sync's websockets —
//! reaches only globally routable addresses, resolved once, every answer vetted, and the
//! connection pinned to a vetted address. Operator-configured targets are trusted; one
//! switch (`allow_non_global_targets`) allows non-global ones for tests and closed
//! networks. See `docs/explanation/outbound.md`.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`address`] | which IP addresses are global (pure, range by range) |
//! | [`target`] | the URL checks, DNS vetting and the pinned [`Vetted`] target |
//! | [`websocket`] | relay sync's dialer: vetted, pinned, handshake with the original name |

pub mod address;
pub mod target;
pub mod websocket;

pub use target::{OutboundPolicy, Refused, Resolve, SystemResolver, TableResolver, TargetKind, Vetted};
