//! Following the journal. One task reads what the journal gained a few times a second: it feeds
//! the exporter (for `serve`) and says how far the journal reaches. Each event-stream client
//! reads from its own position when that moves, so a slow client holds only its own page and
//! a reconnecting one (`Last-Event-ID`) misses nothing still in the store.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use self_healing::export::PrometheusExporter;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{ApiError, App};
use crate::store::{JournalCursor, JournalEntry, Store};

/// How often the journal is read for news.
const POLL: Duration = Duration::from_millis(250);
/// Entries per table per read while catching up.
const CATCH_UP_PAGE: u32 = 5000;
/// Entries per table a stream client reads at once.
const CLIENT_PAGE: u32 = 200;
/// The comment line that keeps idle streams open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How far the follower has read.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Followed {
    /// Past everything read.
    pub(super) cursor: JournalCursor,
    /// Whether it has read everything the journal held when it started (the exporter's
    /// figures are whole).
    pub(super) caught_up: bool,
}

/// Starts following the journal until `shutdown`: from its start when `exporter` is given (it
/// counts every entry), else from its end.
pub(super) async fn follow(
    store: Arc<dyn Store>,
    exporter: Option<PrometheusExporter>,
    shutdown: CancellationToken,
) -> watch::Receiver<Followed> {
    let start = match &exporter {
        Some(_) => Ok(JournalCursor::default()),
        None => store.journal_end().await,
    };
    let (tx, rx) = watch::channel(Followed {
        cursor: start.unwrap_or_default(),
        caught_up: exporter.is_none(),
    });
    tokio::spawn(async move {
        let mut cursor = tx.borrow().cursor;
        let mut failing = false;
        loop {
            let read = tokio::select! {
                read = store.journal_since(cursor, CATCH_UP_PAGE) => read,
                () = shutdown.cancelled() => return,
            };
            let more = match read {
                Ok((entries, next)) => {
                    if failing {
                        eprintln!("  the store answers again");
                        failing = false;
                    }
                    if let Some(exporter) = &exporter {
                        for entry in &entries {
                            exporter.observe(&entry.project, &entry.event.kind);
                        }
                    }
                    let moved = next != cursor;
                    cursor = next;
                    tx.send_if_modified(|followed| {
                        let caught_up = followed.caught_up || !moved;
                        let changed = followed.cursor != cursor || followed.caught_up != caught_up;
                        *followed = Followed { cursor, caught_up };
                        changed
                    });
                    moved
                }
                Err(error) => {
                    if !failing {
                        eprintln!("  ! the journal cannot be read: {error}");
                        failing = true;
                    }
                    false
                }
            };
            if !more {
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    });
    rx
}

/// `GET /api/v1/events/stream`: every entry journaled from now on (or after `Last-Event-ID`).
pub(super) async fn events(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let from = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?
            .parse::<JournalCursor>()
            .map_err(|e| ApiError::bad_request(format!("Last-Event-ID: {e}")))?,
        None => app.journal.borrow().cursor,
    };
    let client = Client {
        store: Arc::clone(&app.store),
        journal: app.journal.clone(),
        cursor: from,
        pending: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(client, Client::next);
    let shutdown = app.shutdown.clone();
    let stream = futures_util::StreamExt::take_until(stream, shutdown.cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// One stream client's place in the journal.
struct Client {
    store: Arc<dyn Store>,
    journal: watch::Receiver<Followed>,
    cursor: JournalCursor,
    pending: VecDeque<JournalEntry>,
}

impl Client {
    /// The next message; `None` ends the stream (the server is stopping, or the store failed:
    /// the client reconnects with its `Last-Event-ID`).
    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                let message = SseEvent::default()
                    .event("journal")
                    .id(entry.cursor.to_string())
                    .json_data(&entry)
                    .ok()?;
                return Some((Ok(message), self));
            }
            if self.journal.borrow_and_update().cursor != self.cursor {
                let (entries, next) = self
                    .store
                    .journal_since(self.cursor, CLIENT_PAGE)
                    .await
                    .ok()?;
                let moved = next != self.cursor;
                self.cursor = next;
                self.pending.extend(entries);
                if moved {
                    continue;
                }
            }
            self.journal.changed().await.ok()?;
        }
    }
}
