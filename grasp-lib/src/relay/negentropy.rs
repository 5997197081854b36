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
    pub(super) async fn open(
        store: &EventStore,
        mut filter: Filter,
        max_items: usize,
    ) -> Result<Self, String> {
        // Never load more than one record past the cap.
        filter.limit = Some(filter.limit.map_or(max_items + 1, |l| l.min(max_items + 1)));
        let items = store.items_for_client(filter).await.map_err(|e| {
            tracing::warn!(error = %e, "negentropy query failed");
            e.client_message()
        })?;
        if items.len() > max_items {
            return Err(format!(
                "blocked: filter matches more than the {max_items} events one session may cover; narrow it"
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
