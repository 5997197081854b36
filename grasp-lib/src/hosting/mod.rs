//! Hosting: the repositories on this server, the events that drive them, and purgatory.
//!
//! This is where git data and events meet. [`Hosting::process`] is the one step that runs
//! whenever git data may have become available (after a push, when a held event arrives,
//! when a repository is created): it releases held events whose data is here, aligns every
//! repository with the identifier to its maintainers' newest state, and moves pull request
//! refs. [`Hosting::sweep`] drops what waited too long.
//!
//! | Module | Concern |
//! |---|---|
//! | [`hub`] | [`Hosting`] itself: what it holds, holding and releasing, reading refs |
//! | [`git_data`] | the git-data step ([`Hosting::process`]) |
//! | [`align`] | bringing one repository to a state, and the step's report |
//! | [`pull_requests`] | `refs/nostr/<id>` against its event, offering accepted pull requests |
//! | [`placeholders`] | refs waiting for their event, and the serving settings |
//! | [`expiry`] | deadlines, deletions, and what a push keeps alive |
//! | [`prs_lifecycle`] | `/prs/` repositories that come and go |
//! | [`decide`] | the pure decisions the steps above act on |
//! | [`view`] | the stored-and-held view push authorization reads |

pub mod align;
pub mod decide;
pub mod expiry;
pub mod git_data;
pub mod hub;
pub mod placeholders;
pub mod prs_lifecycle;
pub mod pull_requests;
pub mod view;

pub use align::{authoritative_state, IdentifierLocks, ProcessReport};
pub use hub::{Arrival, FetchInProgress, Hosting, ReleasedEvent, DUPLICATE_HELD_MESSAGE, PURGATORY_MESSAGE};
