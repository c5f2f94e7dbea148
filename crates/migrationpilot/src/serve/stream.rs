//! Following the journal. One task reads what the journal gained a few times a second: it feeds
//! the exporter (for `serve`), says how far the journal reaches, and broadcasts each entry to the
//! event-stream clients, so a hundred clients cost one read of the store. A client that connects
//! behind (`Last-Event-ID`), or falls more than the broadcast's capacity behind, reads its own
//! way from the store until it has caught up, then follows the broadcast again: it misses
//! nothing still in the store, and a slow one holds only its own page.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{Extensions, HeaderMap, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use self_healing::export::PrometheusExporter;
use tokio::sync::{broadcast, watch};
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
/// Entries the broadcast holds for clients that are momentarily behind.
const BROADCAST: usize = 4096;

/// Where the stream is served: the one endpoint that takes `?access_token=`.
pub(super) const PATH: &str = "/api/v1/events/stream";

/// The stream's query: the token, for a browser's `EventSource`, which cannot send headers.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    #[allow(
        dead_code,
        reason = "read by the guard, beyond loopback; taken here so it is known"
    )]
    access_token: Option<String>,
}

/// `?access_token=` of a request for the stream, percent-decoded as a browser encodes it
/// (`encodeURIComponent`); a query that cannot be read, or names the token twice, is a `400`.
pub(super) fn access_token(uri: &Uri) -> Result<Option<String>, ApiError> {
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::bad_request(format!("bad query: {}", e.body_text())))?;
    let mut tokens = pairs.into_iter().filter(|(name, _)| name == "access_token");
    let token = tokens.next().map(|(_, value)| value);
    if tokens.next().is_some() {
        return Err(ApiError::bad_request(
            "access_token is given more than once",
        ));
    }
    Ok(token)
}

/// The digits of each journal position's part, at most: every such number fits an `i64`, and
/// the document's pattern says the same.
const POSITION_DIGITS: usize = 18;

/// A `Last-Event-ID` as the document's pattern has it (`e17.i20.h5.s9`, each number of at most
/// [`POSITION_DIGITS`] digits), read.
fn last_event_id(text: &str) -> Result<JournalCursor, ApiError> {
    let well_formed = text
        .split('.')
        .zip(['e', 'i', 'h', 's'])
        .all(|(part, tag)| {
            part.strip_prefix(tag).is_some_and(|digits| {
                (1..=POSITION_DIGITS).contains(&digits.len())
                    && digits.bytes().all(|b| b.is_ascii_digit())
            })
        })
        && text.split('.').count() == 4;
    if !well_formed {
        return Err(ApiError::bad_request(format!(
            "Last-Event-ID: `{text}` is not a journal position (like e17.i20.h5.s9)"
        )));
    }
    text.parse::<JournalCursor>()
        .map_err(|e| ApiError::bad_request(format!("Last-Event-ID: {e}")))
}

/// The follower's news: how far it has read (watched) and each entry (broadcast).
#[derive(Clone)]
pub(super) struct Journal {
    pub(super) followed: watch::Receiver<Followed>,
    entries: broadcast::Sender<Arc<JournalEntry>>,
}

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
) -> Journal {
    let start = match &exporter {
        Some(_) => Ok(JournalCursor::default()),
        None => store.journal_end().await,
    };
    let (tx, rx) = watch::channel(Followed {
        cursor: start.unwrap_or_default(),
        caught_up: exporter.is_none(),
    });
    let (entries, _) = broadcast::channel(BROADCAST);
    let journal = Journal {
        followed: rx,
        entries: entries.clone(),
    };
    tokio::spawn(async move {
        let mut cursor = tx.borrow().cursor;
        let mut failing = false;
        loop {
            let read = tokio::select! {
                read = store.journal_since(cursor, CATCH_UP_PAGE) => read,
                () = shutdown.cancelled() => return,
            };
            let more = match read {
                Ok((read_entries, next)) => {
                    if failing {
                        eprintln!("  the store answers again");
                        failing = false;
                    }
                    for entry in read_entries {
                        if let Some(exporter) = &exporter {
                            exporter.observe(&entry.project, &entry.event);
                        }
                        // No receiver is fine: nobody is streaming.
                        let _ = entries.send(Arc::new(entry));
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
    journal
}

/// `GET /api/v1/events/stream`: every entry journaled from now on (or after `Last-Event-ID`).
pub(super) async fn events(
    State(app): State<App>,
    headers: HeaderMap,
    extensions: Extensions,
    q: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    super::api::query(q)?;
    // Subscribed before reading where the journal is, so nothing falls in between.
    let live = app.journal.entries.subscribe();
    let from = match headers.get("last-event-id") {
        Some(value) => last_event_id(
            value
                .to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not text"))?,
        )?,
        // From now on: the end of the journal, which the follower may not have reached yet.
        None => app.store.journal_end().await?,
    };
    let client = Client {
        store: Arc::clone(&app.store),
        followed: app.journal.followed.clone(),
        live,
        cursor: from,
        pending: VecDeque::new(),
        catching_up: false,
    };
    let stream = futures_util::stream::unfold(client, Client::next);
    let shutdown = app.shutdown.clone();
    let stream = futures_util::StreamExt::take_until(stream, shutdown.cancelled_owned());
    // Dropped with the stream: the connection is an ordinary one again.
    let end = super::conn::StreamEnd::of(&extensions);
    let stream = futures_util::StreamExt::map(stream, move |message| {
        let _ = &end;
        message
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive")))
}

/// One stream client's place in the journal.
struct Client {
    store: Arc<dyn Store>,
    followed: watch::Receiver<Followed>,
    live: broadcast::Receiver<Arc<JournalEntry>>,
    /// Past everything sent to this client.
    cursor: JournalCursor,
    /// Read from the store while catching up, not sent yet.
    pending: VecDeque<JournalEntry>,
    /// Set after falling behind the broadcast: read the store until it has nothing more.
    catching_up: bool,
}

impl Client {
    /// The next message; `None` ends the stream (the server is stopping, or the store failed:
    /// the client reconnects with its `Last-Event-ID`).
    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Self)> {
        loop {
            if let Some(entry) = self.pending.pop_front() {
                let message = self.send(&entry)?;
                return Some((Ok(message), self));
            }
            // Behind what the follower has read (connected late), or fallen behind the
            // broadcast: read the store until it has nothing more. Everything broadcast was
            // committed first, so the store has it; what the broadcast brings again is skipped.
            let followed = self.followed.borrow_and_update().cursor;
            if self.catching_up || !self.cursor.reaches(&followed) {
                let (entries, next) = self
                    .store
                    .journal_since(self.cursor, CLIENT_PAGE)
                    .await
                    .ok()?;
                self.pending
                    .extend(entries.into_iter().filter(|e| !self.cursor.covers(e)));
                if self.pending.is_empty() {
                    // Nothing readable up to `next`: go on from there. With nothing more at all,
                    // catching up is over; if the store lacks what the follower saw (it was
                    // replaced), wait for news.
                    let before = self.cursor;
                    self.cursor = self.cursor.furthest(next);
                    if self.cursor == before {
                        if self.catching_up {
                            self.catching_up = false;
                        } else {
                            self.followed.changed().await.ok()?;
                        }
                    }
                }
                continue;
            }
            match self.live.recv().await {
                Ok(entry) if self.cursor.covers(&entry) => continue,
                Ok(entry) => {
                    let message = self.send(&entry)?;
                    return Some((Ok(message), self));
                }
                // Too far behind for the broadcast: catch up from the store, then follow again.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.live = self.live.resubscribe();
                    self.catching_up = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The message for `entry`, moving this client's cursor past it. Its id is where this
    /// client is: past everything it was sent.
    fn send(&mut self, entry: &JournalEntry) -> Option<SseEvent> {
        self.cursor = self.cursor.furthest(entry.cursor);
        let shown = JournalEntry {
            cursor: self.cursor,
            ..entry.clone()
        };
        SseEvent::default()
            .event("journal")
            .id(self.cursor.to_string())
            .json_data(&shown)
            .ok()
    }
}
