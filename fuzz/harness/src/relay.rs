//! Client relay messages: every line of the input is one message to the same session, so
//! sequences (REQ then CLOSE, NEG-OPEN then NEG-MSG) are reachable.

use std::sync::{Arc, OnceLock};

use grasp_lib::metrics::Metrics;
use grasp_lib::policy::AcceptAll;
use grasp_lib::relay::{Relay, RelayLimits};
use grasp_lib::store::EventStore;
use serde_json::Value;

/// Replies a relay may send.
const REPLY_TYPES: &[&str] = &["EVENT", "OK", "EOSE", "CLOSED", "NOTICE", "COUNT", "NEG-MSG", "NEG-ERR"];

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
    })
}

fn relay() -> Arc<Relay> {
    static RELAY: OnceLock<Arc<Relay>> = OnceLock::new();
    RELAY
        .get_or_init(|| {
            let limits = RelayLimits { max_message_size: 64 * 1024, ..RelayLimits::default() };
            Arc::new(Relay::with_store(EventStore::memory(), Arc::new(AcceptAll), limits, Metrics::new()))
        })
        .clone()
}

/// Feeds each line of the input to one relay session. Every reply must be a JSON array
/// whose first element is a relay message type.
pub fn relay_message(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let relay = relay();
    runtime().block_on(async {
        let mut session = relay.session("127.0.0.1".parse().expect("ip"));
        for line in text.split('\n').take(32) {
            for reply in session.handle(line).await {
                let value: Value = serde_json::from_str(&reply).expect("replies are JSON");
                let kind =
                    value.get(0).and_then(Value::as_str).expect("replies are arrays led by their type");
                assert!(REPLY_TYPES.contains(&kind), "unknown reply type {kind}");
            }
        }
    });
}
