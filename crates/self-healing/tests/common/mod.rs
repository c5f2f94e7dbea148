//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use self_healing::BoxFuture;
use self_healing::alert::{Alert, Notifier, NotifyError};
use self_healing::event::{Event, EventKind};
use self_healing::pipeline::SelfHealingPipeline;

/// Every event a pipeline publishes, for assertions.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Arc<Event>>>>);

impl Recorder {
    pub fn attach<C: Send + Sync + 'static>(pipeline: &SelfHealingPipeline<C>) -> Self {
        let recorder = Recorder::default();
        let sink = recorder.clone();
        pipeline.events().add_sink(Arc::new(move |e: &Event| {
            sink.0.lock().unwrap().push(Arc::new(e.clone()));
        }));
        recorder
    }

    pub fn kinds(&self) -> Vec<EventKind> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.kind.clone())
            .collect()
    }

    /// What `pick` takes from each event it recognises, in order.
    pub fn pick<T>(&self, pick: impl Fn(EventKind) -> Option<T>) -> Vec<T> {
        self.kinds().into_iter().filter_map(pick).collect()
    }

    pub fn count(&self, pred: impl Fn(&EventKind) -> bool) -> usize {
        self.kinds().iter().filter(|k| pred(k)).count()
    }
}

/// Tracks work running at once and the most ever seen.
#[derive(Default)]
pub struct Gauge {
    now: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    pub fn enter(&self) -> usize {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        now
    }

    pub fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    pub fn take_peak(&self) -> usize {
        self.peak
            .swap(self.now.load(Ordering::SeqCst), Ordering::SeqCst)
    }
}

/// An alert channel that keeps what it is sent (an in-process fake for unit-level tests).
#[derive(Default)]
pub struct RecordingNotifier {
    pub alerts: Mutex<Vec<Alert>>,
}

impl Notifier for RecordingNotifier {
    fn notify<'a>(&'a self, alerts: &'a [Alert]) -> BoxFuture<'a, Result<(), NotifyError>> {
        self.alerts.lock().unwrap().extend(alerts.iter().cloned());
        Box::pin(async { Ok(()) })
    }

    fn name(&self) -> &str {
        "recording"
    }
}

impl RecordingNotifier {
    pub fn titles(&self) -> Vec<String> {
        self.alerts
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.title.clone())
            .collect()
    }
}
