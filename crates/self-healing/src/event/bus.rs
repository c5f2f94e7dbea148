//! The bus: publishing, and the three ways to subscribe (see the module's back-pressure rule).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{Notify, broadcast, mpsc};
use tokio::time::Instant;

use super::{Event, EventKind, RunId};
use crate::clock::{Clock, default_clock};

/// A subscriber called inline on the publishing task. It must return quickly and never block:
/// it runs on the stage's hot path.
pub trait EventSink: Send + Sync + 'static {
    /// Called once for every event published on the bus, in the publisher's task.
    fn on_event(&self, event: &Event);
}

impl<F> EventSink for F
where
    F: Fn(&Event) + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event) {
        self(event)
    }
}

/// The pipeline's event bus. Cheap to clone; clones publish to the same subscribers.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use self_healing::event::{Event, EventBus, EventKind};
///
/// let bus = EventBus::new();
/// let failures = Arc::new(AtomicU64::new(0));
/// let counter = Arc::clone(&failures);
/// bus.add_sink(Arc::new(move |event: &Event| {
///     if let EventKind::AttemptFailed { .. } = event.kind {
///         counter.fetch_add(1, Ordering::Relaxed);
///     }
/// }));
/// let mut live = bus.subscribe_lossy();
/// bus.publish(None, EventKind::StageStarted { stage: "load".into(), concurrency: 1 });
/// assert_eq!(failures.load(Ordering::Relaxed), 0);
/// assert_eq!(bus.published(), 1);
/// # drop(live);
/// ```
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

struct BusInner {
    clock: Arc<dyn Clock>,
    sinks: RwLock<Vec<Arc<dyn EventSink>>>,
    ordered: Mutex<Ordered>,
    pace: Arc<Pace>,
    durable: Arc<Durable>,
    lossy: broadcast::Sender<Arc<Event>>,
    published: AtomicU64,
}

/// What the durable subscribers (a journal) have committed: each one's highest acknowledged
/// sequence number, and a wake-up for when one advances or goes away.
#[derive(Default)]
struct Durable {
    marks: Mutex<Vec<Arc<Mark>>>,
    advanced: Notify,
}

/// Where a durable subscriber is: the last event it acknowledged, and the last it was sent.
/// Events it does not want are never sent, so it has committed `seq` once it acknowledged
/// `seq` or everything it was sent.
struct Mark {
    acknowledged: AtomicU64,
    sent: AtomicU64,
}

impl Durable {
    /// Whether every durable subscriber has committed `seq` (true when there is none).
    fn covers(&self, seq: u64) -> bool {
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .all(|mark| {
                let sent = mark.sent.load(Ordering::Acquire);
                mark.acknowledged.load(Ordering::Acquire) >= seq.min(sent)
            })
    }

    fn remove(&self, mark: &Arc<Mark>) {
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|m| !Arc::ptr_eq(m, mark));
        self.advanced.notify_waiters();
    }
}

/// Sequence assignment and queue delivery happen under one lock, so each queue sees events in
/// sequence order.
struct Ordered {
    next_seq: u64,
    queues: Vec<Queue>,
}

/// A lossless subscriber's queue, and the events it wants.
struct Queue {
    tx: mpsc::UnboundedSender<Arc<Event>>,
    wants: fn(&EventKind) -> bool,
    depth: Option<Arc<Depth>>,
    /// A durable subscriber's mark, told of each event sent.
    mark: Option<Arc<Mark>>,
}

/// Whether work on a bus may start: how many pacing subscribers are behind, and a wake-up for
/// when the last of them catches up.
#[derive(Default)]
struct Pace {
    behind: AtomicUsize,
    caught_up: Notify,
}

/// A pacing subscriber's queue depth. Behind above `limit`; caught up again at half of it, so
/// work does not stop and start on every event.
struct Depth {
    queued: AtomicUsize,
    limit: usize,
    behind: AtomicBool,
}

impl Depth {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Depth {
            queued: AtomicUsize::new(0),
            limit: limit.max(1),
            behind: AtomicBool::new(false),
        })
    }

    fn queued(&self, pace: &Pace) {
        let queued = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if queued > self.limit && !self.behind.swap(true, Ordering::AcqRel) {
            pace.behind.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn received(&self, pace: &Pace) {
        let queued = self.queued.fetch_sub(1, Ordering::AcqRel) - 1;
        if queued <= self.limit / 2 {
            self.catch_up(pace);
        }
    }

    fn catch_up(&self, pace: &Pace) {
        if self.behind.swap(false, Ordering::AcqRel) {
            pace.behind.fetch_sub(1, Ordering::AcqRel);
            pace.caught_up.notify_waiters();
        }
    }
}

/// Default capacity of the ring behind [`EventBus::subscribe_lossy`].
pub const DEFAULT_LOSSY_CAPACITY: usize = 4096;

impl EventBus {
    /// A bus on tokio time, with a lossy ring of `DEFAULT_LOSSY_CAPACITY` events.
    pub fn new() -> Self {
        EventBus::with_clock(default_clock())
    }

    /// A bus that stamps events with `clock`, with a lossy ring of `DEFAULT_LOSSY_CAPACITY` events.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        EventBus::with_clock_and_capacity(clock, DEFAULT_LOSSY_CAPACITY)
    }

    /// `lossy_capacity` is how many events a lossy subscriber may fall behind before it lags.
    pub fn with_clock_and_capacity(clock: Arc<dyn Clock>, lossy_capacity: usize) -> Self {
        let (lossy, _) = broadcast::channel(lossy_capacity.max(1));
        EventBus {
            inner: Arc::new(BusInner {
                clock,
                sinks: RwLock::new(Vec::new()),
                ordered: Mutex::new(Ordered {
                    next_seq: 1,
                    queues: Vec::new(),
                }),
                pace: Arc::default(),
                durable: Arc::default(),
                lossy,
                published: AtomicU64::new(0),
            }),
        }
    }

    /// The clock that stamps this bus's events.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Publishes an event to every subscriber and returns it. Never waits.
    pub fn publish(&self, run: Option<&RunId>, kind: EventKind) -> Arc<Event> {
        let [event] = self.publish_at(run, self.inner.clock.instant(), [kind]);
        event
    }

    /// Publishes events that happened together at `at` (an instant of this bus's clock, read a
    /// moment ago), in order, and returns them: one clock reading and one turn of the bus's
    /// locks for all of them, as a pipeline hands over an item's attempt and its success.
    /// Never waits.
    pub fn publish_at<const N: usize>(
        &self,
        run: Option<&RunId>,
        at: Instant,
        kinds: [EventKind; N],
    ) -> [Arc<Event>; N] {
        let inner = &*self.inner;
        let at = inner.clock.wall_at(at);
        let events = {
            let mut ordered = inner.ordered.lock().unwrap_or_else(|e| e.into_inner());
            kinds.map(|kind| {
                let event = Arc::new(Event {
                    seq: ordered.next_seq,
                    at,
                    run: run.cloned(),
                    kind,
                });
                ordered.next_seq += 1;
                // A queue whose receiver is gone is dropped here, on the next publish.
                ordered.queues.retain(|queue| {
                    if !(queue.wants)(&event.kind) {
                        return !queue.tx.is_closed();
                    }
                    // Counted before it is sent, so the receiver never takes away more than came.
                    if let Some(depth) = &queue.depth {
                        depth.queued(&inner.pace);
                    }
                    let sent = queue.tx.send(Arc::clone(&event)).is_ok();
                    if let (false, Some(depth)) = (sent, &queue.depth) {
                        depth.catch_up(&inner.pace);
                    }
                    if let Some(mark) = &queue.mark {
                        mark.sent.store(event.seq, Ordering::Release);
                    }
                    sent
                });
                event
            })
        };
        inner.published.fetch_add(N as u64, Ordering::Relaxed);
        if inner.lossy.receiver_count() > 0 {
            for event in &events {
                let _ = inner.lossy.send(Arc::clone(event));
            }
        }
        let sinks = inner.sinks.read().unwrap_or_else(|e| e.into_inner());
        for sink in sinks.iter() {
            for event in &events {
                sink.on_event(event);
            }
        }
        drop(sinks);
        events
    }

    /// Adds an inline subscriber. See the module's back-pressure rule.
    pub fn add_sink(&self, sink: Arc<dyn EventSink>) {
        self.inner
            .sinks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(sink);
    }

    /// A lossless subscription: every event published from now on, in order.
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_to(|_| true)
    }

    /// A lossless subscription to the events `wants` picks, in order. Events it does not want
    /// are never queued, so a subscriber that follows stages costs nothing per item.
    pub fn subscribe_to(&self, wants: fn(&EventKind) -> bool) -> Subscription {
        self.add_queue(wants, None, None)
    }

    /// A lossless subscription that paces the work on this bus: while more than `limit` events
    /// wait in its queue, pipelines start no new item (see [`paced`](Self::paced)) until it is
    /// down to half of that. Publishing still never waits, so memory holds at most `limit`
    /// events plus those of the items already running. For a subscriber that must see every
    /// event and may be slower than the work, such as a journal on a disk.
    pub fn subscribe_pacing(&self, wants: fn(&EventKind) -> bool, limit: usize) -> Subscription {
        self.add_queue(wants, Some(Depth::new(limit)), None)
    }

    /// A pacing subscription (see [`subscribe_pacing`](Self::subscribe_pacing)) that is also
    /// durable: it [`acknowledge`](Subscription::acknowledge)s what it has made permanent, and
    /// [`durable`](Self::durable) waits for that. For the journal, so a decision is committed
    /// before it acts. Events it does not want are never waited for.
    pub fn subscribe_durable(&self, wants: fn(&EventKind) -> bool, limit: usize) -> Subscription {
        let now = self.published();
        let mark = Arc::new(Mark {
            acknowledged: AtomicU64::new(now),
            sent: AtomicU64::new(now),
        });
        self.inner
            .durable
            .marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::clone(&mark));
        let mut subscription =
            self.add_queue(wants, Some(Depth::new(limit)), Some(Arc::clone(&mark)));
        subscription.durable = Some((mark, Arc::clone(&self.inner.durable)));
        subscription
    }

    /// Waits until every durable subscriber has acknowledged the event `seq` (and those before
    /// it); returns at once when there is none. A subscriber that goes away stops counting.
    pub async fn durable(&self, seq: u64) {
        let durable = &*self.inner.durable;
        loop {
            if durable.covers(seq) {
                return;
            }
            let advanced = durable.advanced.notified();
            tokio::pin!(advanced);
            advanced.as_mut().enable();
            if durable.covers(seq) {
                return;
            }
            advanced.await;
        }
    }

    fn add_queue(
        &self,
        wants: fn(&EventKind) -> bool,
        depth: Option<Arc<Depth>>,
        mark: Option<Arc<Mark>>,
    ) -> Subscription {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .ordered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queues
            .push(Queue {
                tx,
                wants,
                depth: depth.clone(),
                mark,
            });
        Subscription {
            rx,
            pacing: depth.map(|depth| (depth, Arc::clone(&self.inner.pace))),
            durable: None,
        }
    }

    /// Waits while a pacing subscriber is behind; returns at once otherwise (one atomic load).
    pub async fn paced(&self) {
        let pace = &*self.inner.pace;
        loop {
            if pace.behind.load(Ordering::Acquire) == 0 {
                return;
            }
            let caught_up = pace.caught_up.notified();
            tokio::pin!(caught_up);
            caught_up.as_mut().enable();
            if pace.behind.load(Ordering::Acquire) == 0 {
                return;
            }
            caught_up.await;
        }
    }

    /// A subscription that may lag and says so. See the module's back-pressure rule.
    pub fn subscribe_lossy(&self) -> LossySubscription {
        LossySubscription {
            rx: self.inner.lossy.subscribe(),
        }
    }

    /// How many events were published on this bus: also the sequence number of the latest.
    pub fn published(&self) -> u64 {
        self.inner.published.load(Ordering::Relaxed)
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("published", &self.published())
            .finish_non_exhaustive()
    }
}

/// A lossless, ordered subscription.
pub struct Subscription {
    rx: mpsc::UnboundedReceiver<Arc<Event>>,
    /// For a pacing subscription: its depth, and the bus's pace to report catching up to.
    pacing: Option<(Arc<Depth>, Arc<Pace>)>,
    /// For a durable subscription: its acknowledged mark, and the bus's record of marks.
    durable: Option<(Arc<Mark>, Arc<Durable>)>,
}

impl Subscription {
    /// The next event; `None` once the bus is gone and the backlog is drained.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        let event = self.rx.recv().await;
        self.received(event.is_some());
        event
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        let event = self.rx.try_recv().ok();
        self.received(event.is_some());
        event
    }

    fn received(&self, some: bool) {
        if let (true, Some((depth, pace))) = (some, &self.pacing) {
            depth.received(pace);
        }
    }

    /// Events published but not yet received.
    pub fn backlog(&self) -> usize {
        self.rx.len()
    }

    /// Says that every event up to `seq` is permanent now (a durable subscription's journal
    /// committed them); [`EventBus::durable`] waits for this. No-op on other subscriptions.
    pub fn acknowledge(&self, seq: u64) {
        if let Some((mark, durable)) = &self.durable
            && mark.acknowledged.fetch_max(seq, Ordering::AcqRel) < seq
        {
            durable.advanced.notify_waiters();
        }
    }
}

impl Drop for Subscription {
    /// A pacing subscriber that goes away no longer holds work back, and a durable one no
    /// longer holds back decisions.
    fn drop(&mut self) {
        if let Some((depth, pace)) = &self.pacing {
            depth.catch_up(pace);
        }
        if let Some((mark, durable)) = &self.durable {
            durable.remove(mark);
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("backlog", &self.backlog())
            .field("pacing", &self.pacing.is_some())
            .field("durable", &self.durable.is_some())
            .finish()
    }
}

/// What a [`LossySubscription`] receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The next event.
    Event(Arc<Event>),
    /// This many events were overwritten before they could be received.
    Lagged(u64),
    /// Every clone of the bus was dropped: no more events will come.
    Closed,
}

/// A subscription that keeps only the newest events when it falls behind.
#[derive(Debug)]
pub struct LossySubscription {
    rx: broadcast::Receiver<Arc<Event>>,
}

impl LossySubscription {
    /// The next event, or how many were missed; `Closed` once the bus is gone.
    pub async fn recv(&mut self) -> Received {
        match self.rx.recv().await {
            Ok(event) => Received::Event(event),
            Err(broadcast::error::RecvError::Lagged(n)) => Received::Lagged(n),
            Err(broadcast::error::RecvError::Closed) => Received::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::error::StageError;

    fn stage_started(name: &str) -> EventKind {
        EventKind::StageStarted {
            stage: name.into(),
            concurrency: 1,
        }
    }

    #[tokio::test]
    async fn queues_receive_every_event_in_order() {
        let bus = EventBus::new();
        let mut sub = bus.subscribe();
        for i in 0..1000 {
            bus.publish(None, stage_started(&i.to_string()));
        }
        assert_eq!(sub.backlog(), 1000);
        for expected in 1..=1000 {
            assert_eq!(sub.recv().await.unwrap().seq, expected);
        }
    }

    #[tokio::test]
    async fn a_filtered_queue_gets_only_what_it_wants_and_is_pruned_when_dropped() {
        let bus = EventBus::new();
        let mut stages = bus.subscribe_to(|kind| matches!(kind, EventKind::StageStarted { .. }));
        bus.publish(
            None,
            EventKind::ItemsSkipped {
                stage: "a".into(),
                count: 3,
            },
        );
        bus.publish(None, stage_started("b"));
        assert_eq!(stages.backlog(), 1);
        assert_eq!(stages.recv().await.unwrap().seq, 2);
        drop(stages);
        bus.publish(
            None,
            EventKind::ItemsSkipped {
                stage: "a".into(),
                count: 1,
            },
        );
        assert!(
            bus.inner.ordered.lock().unwrap().queues.is_empty(),
            "pruned on an event it did not want"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pacing_subscriber_holds_work_back_until_half_caught_up() {
        let bus = EventBus::new();
        let mut journal = bus.subscribe_pacing(|_| true, 4);
        let paced = |bus: &EventBus| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.paced().await })
        };
        for i in 0..5 {
            bus.publish(None, stage_started(&i.to_string()));
        }
        let waiting = paced(&bus);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "5 queued, limit 4: behind");
        journal.recv().await.unwrap();
        journal.try_recv().unwrap();
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "3 queued: not yet half of the limit"
        );
        journal.recv().await.unwrap();
        waiting.await.unwrap();

        for i in 0..5 {
            bus.publish(None, stage_started(&i.to_string()));
        }
        let waiting = paced(&bus);
        drop(journal);
        waiting
            .await
            .expect("a dropped pacing subscriber holds nothing back");
        bus.publish(None, stage_started("after"));
        bus.paced().await;
    }

    #[tokio::test]
    async fn a_durable_subscriber_is_not_waited_for_on_events_it_does_not_want() {
        let bus = EventBus::new();
        let journal =
            bus.subscribe_durable(|kind| matches!(kind, EventKind::StageStarted { .. }), 1024);
        let wanted = bus.publish(None, stage_started("a")).seq;
        let unwanted = bus
            .publish(
                None,
                EventKind::ItemsSkipped {
                    stage: "a".into(),
                    count: 1,
                },
            )
            .seq;
        let waiting = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.durable(unwanted).await })
        };
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "the wanted event is not committed yet"
        );
        journal.acknowledge(wanted);
        waiting.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn durable_waits_for_the_journal_to_acknowledge() {
        let bus = EventBus::new();
        bus.durable(bus.published()).await; // no durable subscriber: at once
        let journal = bus.subscribe_durable(|_| true, 1024);
        bus.publish(None, stage_started("a"));
        let decision = bus.publish(None, stage_started("b")).seq;
        let waiting = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.durable(decision).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        journal.acknowledge(decision - 1);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one event short");
        journal.acknowledge(decision);
        waiting.await.unwrap();
        bus.publish(None, stage_started("c"));
        let last = bus.published();
        let waiting = {
            let bus = bus.clone();
            tokio::spawn(async move { bus.durable(last).await })
        };
        drop(journal);
        waiting
            .await
            .expect("a journal that went away holds nothing back");
    }

    #[tokio::test]
    async fn lossy_subscribers_are_told_how_much_they_missed() {
        let bus = EventBus::with_clock_and_capacity(default_clock(), 4);
        let mut slow = bus.subscribe_lossy();
        for i in 0..10 {
            bus.publish(None, stage_started(&i.to_string()));
        }
        assert_eq!(slow.recv().await, Received::Lagged(6));
        match slow.recv().await {
            Received::Event(e) => assert_eq!(e.seq, 7),
            other => panic!("expected event 7, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn dropped_subscriptions_are_pruned_and_sinks_run_inline() {
        let bus = EventBus::new();
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&seen);
        bus.add_sink(Arc::new(move |_: &Event| {
            counter.fetch_add(1, Ordering::Relaxed);
        }));
        drop(bus.subscribe());
        bus.publish(None, stage_started("a"));
        bus.publish(None, stage_started("b"));
        assert_eq!(seen.load(Ordering::Relaxed), 2);
        assert!(bus.inner.ordered.lock().unwrap().queues.is_empty());
    }

    #[test]
    fn events_serialize_with_seed_style_names() {
        let bus = EventBus::new();
        let event = bus.publish(
            Some(&RunId::new("r1")),
            EventKind::AttemptFailed {
                stage: "design".into(),
                item: Some("a.cbl".into()),
                attempt: 2,
                duration: Duration::from_millis(1500),
                error: StageError::new("reset").with_code("ECONNRESET"),
            },
        );
        let json = serde_json::to_value(&*event).unwrap();
        assert_eq!(json["type"], "attempt-failed");
        assert_eq!(json["duration"], 1500.0);
        assert_eq!(json["error"]["code"], "ECONNRESET");
        assert!(
            json["at"].is_u64(),
            "times are milliseconds since the epoch: {json}"
        );
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(
            (back.seq, &back.run, &back.kind),
            (event.seq, &event.run, &event.kind)
        );
        let drift = event.at.duration_since(back.at).unwrap();
        assert!(
            drift < Duration::from_millis(1),
            "only sub-millisecond precision is lost"
        );
    }
}
