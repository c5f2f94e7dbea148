//! The journal read back as one stream: its entries, and the cursor a reader follows it with.

use serde::{Serialize, Serializer};

use self_healing::event::{Event, EventKind};

/// Something the journal gained, in any project: an event, an item completion, a healing
/// decision or the collector's samples, each as the event it was on the bus. What `serve`
/// streams and what its Prometheus exporter counts.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    /// The project.
    pub project: String,
    /// The table it was read from: its own position is `cursor`'s for that table.
    pub table: JournalTable,
    /// Where a reader that has seen this entry (and those before it) goes on from.
    pub cursor: JournalCursor,
    /// The event. A completion, decision or sample read back from its own table carries
    /// `seq` 0: the journal keeps its place in the stream, not on the bus.
    pub event: Event,
}

impl Serialize for JournalEntry {
    /// `{project, run, id, kind, stage, item, event}`: `id` is the cursor, `event` the event as
    /// `run --json-events` prints it.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let event = serde_json::to_value(&self.event).map_err(serde::ser::Error::custom)?;
        let (stage, item) = event_place(&self.event.kind);
        let mut map = serializer.serialize_map(Some(7))?;
        map.serialize_entry("project", &self.project)?;
        map.serialize_entry("run", &self.event.run)?;
        map.serialize_entry("id", &self.cursor.to_string())?;
        map.serialize_entry("kind", &event["type"])?;
        map.serialize_entry("stage", &stage)?;
        map.serialize_entry("item", &item)?;
        map.serialize_entry("event", &event)?;
        map.end()
    }
}

/// The stage and item an event concerns.
pub fn event_place(kind: &EventKind) -> (Option<&str>, Option<&str>) {
    let item = match kind {
        EventKind::ItemSucceeded { item, .. }
        | EventKind::ItemFailed { item, .. }
        | EventKind::ItemAbandoned { item, .. } => Some(&**item),
        EventKind::AttemptStarted { item, .. }
        | EventKind::AttemptSucceeded { item, .. }
        | EventKind::AttemptFailed { item, .. }
        | EventKind::AttemptOutput { item, .. }
        | EventKind::HealingApplied { item, .. }
        | EventKind::CompensationFinished { item, .. } => item.as_deref(),
        EventKind::HealingDecision { record } => record.item.as_deref(),
        _ => None,
    };
    (kind.stage().map(|s| &**s), item)
}

/// How far a reader has followed the journal: the last event, completion, decision and sample
/// seen. Written `e17.i20.h5.s9`, as the `id` of a streamed entry, so a client that reconnects
/// with it misses nothing still in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalCursor {
    /// The last event's id.
    pub event: i64,
    /// The last completion's position.
    pub item: i64,
    /// The last decision's id.
    pub healing: i64,
    /// The last sample's position.
    pub sample: i64,
}

/// The tables the journal is read back from, in the order [`JournalCursor`] writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalTable {
    /// Events.
    Event,
    /// Item completions.
    Item,
    /// Healing decisions.
    Healing,
    /// The collector's samples.
    Sample,
}

impl JournalTable {
    /// Every table, in cursor order.
    pub const ALL: [JournalTable; 4] = [
        JournalTable::Event,
        JournalTable::Item,
        JournalTable::Healing,
        JournalTable::Sample,
    ];
}

impl JournalCursor {
    /// The last position seen in `table`.
    pub fn position(&self, table: JournalTable) -> i64 {
        match table {
            JournalTable::Event => self.event,
            JournalTable::Item => self.item,
            JournalTable::Healing => self.healing,
            JournalTable::Sample => self.sample,
        }
    }

    /// The last position seen in `table`, to move.
    pub fn position_mut(&mut self, table: JournalTable) -> &mut i64 {
        match table {
            JournalTable::Event => &mut self.event,
            JournalTable::Item => &mut self.item,
            JournalTable::Healing => &mut self.healing,
            JournalTable::Sample => &mut self.sample,
        }
    }

    /// Whether a reader at this cursor has already seen `entry`.
    pub fn covers(&self, entry: &JournalEntry) -> bool {
        self.position(entry.table) >= entry.cursor.position(entry.table)
    }

    /// The furthest of the two in each table.
    pub fn furthest(self, other: JournalCursor) -> JournalCursor {
        JournalCursor {
            event: self.event.max(other.event),
            item: self.item.max(other.item),
            healing: self.healing.max(other.healing),
            sample: self.sample.max(other.sample),
        }
    }

    /// Whether this cursor is at or past `other` in every table.
    pub fn reaches(&self, other: &JournalCursor) -> bool {
        JournalTable::ALL
            .iter()
            .all(|t| self.position(*t) >= other.position(*t))
    }
}

impl std::fmt::Display for JournalCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "e{}.i{}.h{}.s{}",
            self.event, self.item, self.healing, self.sample
        )
    }
}

impl std::str::FromStr for JournalCursor {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        let wrong = || format!("`{text}` is not a journal position (like e17.i20.h5.s9)");
        let mut parts = text.split('.');
        let mut next = |tag: char| -> std::result::Result<i64, String> {
            parts
                .next()
                .and_then(|p| p.strip_prefix(tag))
                .and_then(|n| n.parse().ok())
                .filter(|n: &i64| *n >= 0)
                .ok_or_else(wrong)
        };
        let cursor = JournalCursor {
            event: next('e')?,
            item: next('i')?,
            healing: next('h')?,
            sample: next('s')?,
        };
        match parts.next() {
            None => Ok(cursor),
            Some(_) => Err(wrong()),
        }
    }
}
