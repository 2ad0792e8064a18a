//! Per-batch subscriptions: the receivers a batch's submitter named (`notify` in the
//! request), told about that batch only. Two kinds of outbox consumer, so that one dead
//! receiver holds back no other:
//!
//! - [`ChannelNotifier`], one per `[[channels]]` entry of the daemon (consumer
//!   `channel:NAME`): a chat room's incoming webhook (Slack- or Teams-compatible, a readable
//!   line per notable event: [`maas_core::notify::readable`]) or a team's JSON hook. The
//!   operator configured it, so it is retried until it takes the events (at least once, in
//!   order), like the daemon's own webhooks.
//! - [`UrlSubscriptions`] (consumer `subscriptions`): the URLs submitters named, each sent its
//!   batches' events as a JSON array signed with the `[subscriptions]` secret. A URL that
//!   keeps failing is given up for the events at hand after [`maas_core::notify::Strikes::LIMIT`]
//!   attempts (logged), so a submitter's dead endpoint cannot stall everyone's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use maas_core::model::Event;
use maas_core::notify::{ChannelFormat, Strikes, Subscription, readable};
use maas_core::ports::services::{Notifier, NotifyError};
use maas_core::ports::store::Store;

use crate::webhook::{BatchFacts, Poster};

/// The events of `events` whose batch subscribed `wanted` (with the batch's subscriptions
/// read through `facts`).
async fn subscribed<'e>(
    events: &'e [Event],
    facts: &BatchFacts,
    store: &Arc<dyn Store>,
    wanted: impl Fn(&str) -> bool,
) -> Vec<(&'e Event, Vec<String>)> {
    let mut out = Vec::new();
    for e in events {
        if let Some((_, notify)) = facts.of(e, store).await {
            let targets: Vec<String> = notify.into_iter().filter(|t| wanted(t)).collect();
            if !targets.is_empty() {
                out.push((e, targets));
            }
        }
    }
    out
}

/// A channel of the daemon's configuration that batches subscribe to as `channel:NAME`.
pub struct ChannelNotifier {
    entry: String,
    format: ChannelFormat,
    poster: Poster,
    store: Arc<dyn Store>,
    facts: BatchFacts,
}

impl ChannelNotifier {
    /// Channel `name`, delivering in `format` through `poster`.
    pub fn new(name: &str, format: ChannelFormat, poster: Poster, store: Arc<dyn Store>) -> Self {
        let entry = Subscription::Channel(name.to_string()).to_string();
        ChannelNotifier { entry, format, poster, store, facts: BatchFacts::default() }
    }

    /// Its outbox consumer name.
    pub fn consumer(&self) -> &str {
        &self.entry
    }

    /// The body for `events` (`None`: nothing for this channel).
    async fn body(&self, events: &[Event]) -> Result<Option<Vec<u8>>, serde_json::Error> {
        let chosen = subscribed(events, &self.facts, &self.store, |t| t == self.entry).await;
        let chosen: Vec<&Event> = chosen.into_iter().map(|(e, _)| e).collect();
        if chosen.is_empty() {
            return Ok(None);
        }
        let text = |separator: &str| {
            let lines: Vec<String> = chosen.iter().filter_map(|e| readable(e)).collect();
            (!lines.is_empty()).then(|| lines.join(separator))
        };
        Ok(match self.format {
            ChannelFormat::Json => Some(serde_json::to_vec(&chosen)?),
            ChannelFormat::Slack => {
                text("\n").map(|t| serde_json::to_vec(&serde_json::json!({ "text": t }))).transpose()?
            }
            // Teams renders Markdown: a blank line between lines keeps them apart.
            ChannelFormat::Teams => {
                text("\n\n").map(|t| serde_json::to_vec(&serde_json::json!({ "text": t }))).transpose()?
            }
        })
    }
}

#[async_trait]
impl Notifier for ChannelNotifier {
    async fn deliver(&self, events: &[Event]) -> Result<(), NotifyError> {
        let (Some(first), Some(last)) = (events.first(), events.last()) else { return Ok(()) };
        let body = self.body(events).await.map_err(|e| NotifyError::Prepare { cause: e.into() })?;
        let Some(body) = body else { return Ok(()) };
        self.poster.deliver(&body, first.seq, last.seq).await
    }
}

/// Told of each URL given up, with its last error (maasd: the log).
pub type GiveUp = Box<dyn Fn(&str, &NotifyError) + Send + Sync>;

/// The URLs batches named, each sent its batches' events.
pub struct UrlSubscriptions {
    secret: Vec<u8>,
    tls: Arc<rustls::ClientConfig>,
    store: Arc<dyn Store>,
    facts: BatchFacts,
    posters: Mutex<HashMap<String, Arc<Poster>>>,
    /// Failed attempts in a row per URL (maas-core decides when to give one up).
    strikes: Mutex<Strikes>,
    /// Told each URL given up (maasd: the log).
    on_give_up: GiveUp,
}

impl UrlSubscriptions {
    /// Signing with `secret`, trusting the system's roots (`tls`); `on_give_up` hears of
    /// each URL given up.
    pub fn new(secret: &[u8], tls: Arc<rustls::ClientConfig>, store: Arc<dyn Store>, on_give_up: GiveUp) -> Self {
        UrlSubscriptions {
            secret: secret.to_vec(),
            tls,
            store,
            facts: BatchFacts::default(),
            posters: Mutex::default(),
            strikes: Mutex::default(),
            on_give_up,
        }
    }

    fn poster(&self, url: &str) -> Result<Arc<Poster>, NotifyError> {
        let mut posters = self.posters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = posters.get(url) {
            return Ok(p.clone());
        }
        let poster = Poster::with_tls(url, &self.secret, self.tls.clone())
            .map_err(|e| NotifyError::Prepare { cause: e.to_string().into() })?;
        let poster = Arc::new(poster);
        posters.insert(url.to_string(), poster.clone());
        Ok(poster)
    }
}

#[async_trait]
impl Notifier for UrlSubscriptions {
    async fn deliver(&self, events: &[Event]) -> Result<(), NotifyError> {
        let is_url = |t: &str| !t.starts_with("channel:");
        let mut by_url: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
        for (e, urls) in subscribed(events, &self.facts, &self.store, is_url).await {
            for url in urls {
                by_url.entry(url).or_default().push(e);
            }
        }
        let mut failed = None;
        for (url, chosen) in by_url {
            let (first, last) = (chosen[0].seq, chosen[chosen.len() - 1].seq);
            let body = serde_json::to_vec(&chosen).map_err(|e| NotifyError::Prepare { cause: e.into() })?;
            let result = match self.poster(&url) {
                Ok(poster) => poster.deliver(&body, first, last).await,
                Err(e) => Err(e),
            };
            let mut strikes = self.strikes.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(()) => strikes.delivered(&url),
                Err(e) if strikes.failed(&url) => (self.on_give_up)(&url, &e),
                Err(e) => failed = Some(e),
            }
        }
        // Another attempt (the outbox's backoff) goes to every URL of the slice again:
        // receivers deduplicate by `seq`.
        failed.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maas_core::action::Action;
    use maas_core::machine::Rules;
    use maas_core::ports::store::{EventListParams, QueueStore};
    use maas_sim::memstore::MemStore;
    use maas_sim::testkit::store::Harness;

    /// A URL that never answers is given up for the events at hand after `Strikes::LIMIT`
    /// attempts (and said so), instead of holding every other subscription back.
    #[tokio::test]
    async fn a_dead_url_is_given_up_after_its_strikes() {
        let store = Arc::new(MemStore::new(Rules::default()));
        let t = Harness::new(store.clone());
        let hosts = t.add_hosts("dc1", 1).await;
        // Port 1 on loopback: connection refused at once.
        let dead = "http://127.0.0.1:1/hook".to_string();
        let notify = vec![dead.clone()];
        let batch = t.submit(&hosts, Action::PowerCycle, |s| s.notify = notify).await.unwrap().batch;
        let events =
            store.event_list(EventListParams { batch_id: Some(batch.id), ..Default::default() }).await.unwrap();
        let given_up = Arc::new(Mutex::new(Vec::new()));
        let record = given_up.clone();
        let tls = crate::webhook::tls_trusting(rustls::RootCertStore::empty()).unwrap();
        let subs = UrlSubscriptions::new(
            b"k",
            tls,
            store.clone(),
            Box::new(move |url, _| record.lock().unwrap().push(url.to_string())),
        );
        for attempt in 1..Strikes::LIMIT {
            assert!(subs.deliver(&events).await.is_err(), "attempt {attempt} fails and is retried");
        }
        assert!(given_up.lock().unwrap().is_empty());
        subs.deliver(&events).await.expect("given up: the slice counts as delivered");
        assert_eq!(*given_up.lock().unwrap(), [dead]);
        // A batch naming nothing sends nothing.
        assert!(subs.deliver(&[]).await.is_ok());
    }
}
