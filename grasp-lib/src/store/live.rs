//! Live delivery of stored events to every subscriber (each relay connection, relay sync),
//! with a queue per subscriber bounded in events and in bytes.
//!
//! A subscriber that does not keep up (a websocket client that stopped reading) finds its
//! queue emptied and is told how many events it missed ([`RecvError::Lagged`]); the relay
//! then closes its live subscriptions with a reason. So one stuck reader holds at most its
//! own budget, never the events everyone else has already taken. Events are shared
//! (`Arc`): a queue holds references, the JSON is encoded once.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

pub use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;

use nostr::Event;

/// A stored event on its way to live subscribers, with its JSON encoded once.
#[derive(Debug)]
pub struct LiveEvent {
    /// The event.
    pub event: Event,
    /// `event.as_json()`, computed once for every subscriber.
    pub json: String,
}

/// How much one subscriber may have waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueBudget {
    /// Events waiting.
    pub events: usize,
    /// Bytes of their JSON.
    pub bytes: usize,
}

impl Default for QueueBudget {
    fn default() -> Self {
        Self { events: 4096, bytes: 8 * 1024 * 1024 }
    }
}

#[derive(Debug, Default)]
struct Queue {
    events: VecDeque<Arc<LiveEvent>>,
    bytes: usize,
    missed: u64,
}

#[derive(Debug)]
struct Subscriber {
    budget: QueueBudget,
    queue: Mutex<Queue>,
    ready: Notify,
}

/// The fan-out to every subscriber. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    default_budget: QueueBudget,
    subscribers: Arc<Mutex<Vec<Weak<Subscriber>>>>,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

/// One subscriber's end: every event sent after it subscribed, in order, unless it fell
/// behind its budget.
#[derive(Debug)]
pub struct LiveReceiver {
    subscriber: Arc<Subscriber>,
    feed: LiveFeed,
}

impl LiveFeed {
    /// A feed whose subscribers get `budget` unless they ask for another.
    pub fn new(budget: QueueBudget) -> Self {
        Self { default_budget: budget, subscribers: Arc::default(), closed: Arc::default() }
    }

    /// A new subscriber with the default budget.
    pub fn subscribe(&self) -> LiveReceiver {
        self.subscribe_with(self.default_budget)
    }

    /// A new subscriber with its own `budget` (an internal consumer that must see more).
    pub fn subscribe_with(&self, budget: QueueBudget) -> LiveReceiver {
        let subscriber = Arc::new(Subscriber { budget, queue: Mutex::default(), ready: Notify::new() });
        let mut subscribers = self.subscribers.lock().expect("live feed poisoned");
        subscribers.retain(|s| s.strong_count() > 0);
        subscribers.push(Arc::downgrade(&subscriber));
        LiveReceiver { subscriber, feed: self.clone() }
    }

    /// Subscribers now.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().expect("live feed poisoned").iter().filter(|s| s.strong_count() > 0).count()
    }

    /// Queues `event` for every subscriber; one over its budget loses its queue instead
    /// and is told how many events it missed.
    pub fn send(&self, event: Arc<LiveEvent>) {
        let size = event.json.len();
        let subscribers: Vec<Arc<Subscriber>> = {
            let mut all = self.subscribers.lock().expect("live feed poisoned");
            all.retain(|s| s.strong_count() > 0);
            all.iter().filter_map(Weak::upgrade).collect()
        };
        for subscriber in subscribers {
            {
                let mut queue = subscriber.queue.lock().expect("live queue poisoned");
                let budget = subscriber.budget;
                if queue.events.len() + 1 > budget.events || queue.bytes + size > budget.bytes {
                    queue.missed += queue.events.len() as u64 + 1;
                    queue.events.clear();
                    queue.bytes = 0;
                } else {
                    queue.bytes += size;
                    queue.events.push_back(event.clone());
                }
            }
            subscriber.ready.notify_one();
        }
    }

    /// Ends every subscription (receivers then get [`RecvError::Closed`]).
    pub fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let subscribers = self.subscribers.lock().expect("live feed poisoned");
        for subscriber in subscribers.iter().filter_map(Weak::upgrade) {
            subscriber.ready.notify_one();
        }
    }
}

impl LiveReceiver {
    /// The next event, or how many were missed since the last call, or `Closed`.
    pub async fn recv(&mut self) -> Result<Arc<LiveEvent>, RecvError> {
        loop {
            {
                let mut queue = self.subscriber.queue.lock().expect("live queue poisoned");
                if queue.missed > 0 {
                    return Err(RecvError::Lagged(std::mem::take(&mut queue.missed)));
                }
                if let Some(event) = queue.events.pop_front() {
                    queue.bytes -= event.json.len();
                    return Ok(event);
                }
            }
            if self.feed.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(RecvError::Closed);
            }
            self.subscriber.ready.notified().await;
        }
    }

    /// Bytes waiting in this subscriber's queue.
    pub fn queued_bytes(&self) -> usize {
        self.subscriber.queue.lock().expect("live queue poisoned").bytes
    }
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, JsonUtil, Keys, Kind};

    use super::*;

    fn live(content: &str) -> Arc<LiveEvent> {
        let event = EventBuilder::new(Kind::TextNote, content).sign_with_keys(&Keys::generate()).unwrap();
        let json = event.as_json();
        Arc::new(LiveEvent { event, json })
    }

    #[tokio::test]
    async fn every_subscriber_gets_every_event_in_order() {
        let feed = LiveFeed::new(QueueBudget::default());
        let (mut a, mut b) = (feed.subscribe(), feed.subscribe());
        let events: Vec<_> = (0..3).map(|i| live(&i.to_string())).collect();
        for e in &events {
            feed.send(e.clone());
        }
        for receiver in [&mut a, &mut b] {
            for e in &events {
                assert_eq!(receiver.recv().await.unwrap().event.id, e.event.id);
            }
        }
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_loses_its_queue_not_the_others() {
        let feed = LiveFeed::new(QueueBudget { events: 1000, bytes: 10_000 });
        let (mut stuck, mut reading) = (feed.subscribe(), feed.subscribe());
        for i in 0..30 {
            feed.send(live(&format!("{i}{}", "x".repeat(1000))));
            reading.recv().await.unwrap();
            assert!(stuck.queued_bytes() <= 10_000, "the stuck reader holds at most its budget");
        }
        match stuck.recv().await {
            Err(RecvError::Lagged(n)) => assert!(n > 0),
            other => panic!("{other:?}"),
        }
        // After the lag it gets what came since.
        let next = live("after");
        feed.send(next.clone());
        let got = loop {
            match stuck.recv().await {
                Ok(e) if e.event.id == next.event.id => break e,
                Ok(_) => continue,
                Err(e) => panic!("{e:?}"),
            }
        };
        assert_eq!(got.event.id, next.event.id);
    }

    #[tokio::test]
    async fn dropped_receivers_are_forgotten_and_close_ends_the_rest() {
        let feed = LiveFeed::new(QueueBudget::default());
        let gone = feed.subscribe();
        let mut stays = feed.subscribe();
        drop(gone);
        feed.send(live("x"));
        assert_eq!(feed.subscriber_count(), 1);
        stays.recv().await.unwrap();
        feed.close();
        assert!(matches!(stays.recv().await, Err(RecvError::Closed)));
    }
}
