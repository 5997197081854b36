//! NIP-77 negentropy, responder side: a client reconciles its set against ours.

use negentropy::{Id, Negentropy, NegentropyStorageVector};
use nostr::Filter;

use crate::store::EventStore;

/// Largest negentropy frame we produce (bytes before hex encoding); keeps every NEG-MSG
/// well under common client message limits.
const FRAME_SIZE_LIMIT: u64 = 256 * 1024;

/// One open NEG-OPEN session: a sealed snapshot of matching (timestamp, id) records.
pub(super) struct NegentropySession {
    state: Negentropy<'static, NegentropyStorageVector>,
}

impl NegentropySession {
    /// Snapshots the records matching `filter`. Errors are NEG-ERR reasons.
    pub(super) async fn open(store: &EventStore, filter: Filter, max_items: usize) -> Result<Self, String> {
        let items = store.negentropy_items(filter).await.map_err(|e| {
            tracing::warn!(error = %e, "negentropy query failed");
            "error: could not query the event store".to_owned()
        })?;
        if items.len() > max_items {
            return Err(format!(
                "blocked: filter matches {} events, more than the {max_items} one session may cover; narrow it",
                items.len()
            ));
        }
        let mut storage = NegentropyStorageVector::with_capacity(items.len());
        for (id, created_at) in items {
            storage.insert(created_at.as_secs(), Id::from_byte_array(id.to_bytes())).map_err(internal)?;
        }
        storage.seal().map_err(internal)?;
        let state = Negentropy::owned(storage, FRAME_SIZE_LIMIT).map_err(internal)?;
        Ok(Self { state })
    }

    /// Answers one hex message from the client with our hex message.
    pub(super) fn reconcile(&mut self, hex_message: &str) -> Result<String, String> {
        let query =
            hex::decode(hex_message).map_err(|_| "invalid: negentropy message is not hex".to_owned())?;
        let reply = self.state.reconcile(&query).map_err(|e| format!("invalid: negentropy: {e}"))?;
        Ok(hex::encode(reply))
    }
}

fn internal(e: negentropy::Error) -> String {
    tracing::warn!(error = %e, "negentropy storage error");
    format!("error: negentropy: {e}")
}
