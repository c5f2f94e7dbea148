//! The one projection of journaled events into rows, whatever the database. The store's SQL
//! (`sql/journal.rs`) carries out each [`Write`], in order, inside the batch's transaction;
//! everything else (what is journaled, how completions are batched, what each row holds) is
//! decided here, and so is the way back: rows read from each table are [`Found`] and merged into
//! journal entries.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use self_healing::event::{
    AttemptOutput, Event, EventKind, HealthStatus, MetricSample, RunId, RunStatus,
};

use super::{JournalCursor, JournalEntry, JournalTable, Result, StoreError, millis};

/// How much one multi-row statement of completions may carry: a backend's own bound (see
/// `Dialect::STATEMENT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementBound {
    /// Completions in one statement.
    pub rows: usize,
    /// What their values may take, in bytes (their text, their numbers and a length word each).
    pub bytes: usize,
    /// Whether the statement's text is the same whatever its rows (PostgreSQL's arrays): then
    /// each is kept prepared; otherwise only those of `rows` completions, since each shorter
    /// count would keep a large text of its own.
    pub fixed_text: bool,
}

/// What a completion adds to its statement's values, roughly: its text, its numbers, and each
/// value's length word.
fn statement_bytes(done: &ItemDone<'_>) -> usize {
    done.run.map_or(0, str::len) + done.stage.len() + done.item.len() + 3 * 8 + 6 * 4
}

/// One row change. Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub enum Write<'e> {
    /// A run started, or was resumed: the project exists, the run is running.
    RunStarted {
        /// The run id.
        run: &'e str,
        /// The project the run belongs to.
        project: &'e str,
        /// The pipeline's name.
        pipeline: &'e str,
        /// When it started; a resumed run keeps its first start.
        at: i64,
    },
    /// A run ended.
    RunFinished {
        /// The run id.
        run: &'e str,
        /// How it ended.
        status: RunStatus,
        /// When it ended.
        at: i64,
        /// The error that ended it; `None` when it succeeded or was cancelled.
        error: Option<String>,
    },
    /// A stage ended. A stage that succeeded once stays succeeded.
    StageEnded {
        /// The run id.
        run: &'e str,
        /// The stage's name.
        stage: &'e str,
        /// Whether it succeeded (else it failed).
        succeeded: bool,
        /// Units completed, counting those skipped on resume (1 for a stage without items).
        items: i64,
        /// When it ended.
        at: i64,
    },
    /// Item completions, in one statement. A completion is final: an item run again after a
    /// crash keeps its one completion.
    ItemsSucceeded(Vec<ItemDone<'e>>),
    /// A healing decision, its record as JSON in `body`.
    Healing {
        /// The project the decision belongs to.
        project: &'e str,
        /// The run it concerns; `None` when it concerns no run.
        run: Option<&'e str>,
        /// When it was made.
        at: i64,
        /// The stage it concerns, if any.
        stage: Option<&'e str>,
        /// The name of the strategy that decided (`manual` for an operator's action).
        strategy: &'e str,
        /// The action, as its kebab-case name.
        action: &'static str,
        /// What came of it, as its kebab-case name.
        outcome: &'static str,
        /// The whole record as JSON.
        body: String,
    },
    /// The run began (or went on with) a rollback after `stage` failed: it resumes as one.
    RollbackStarted {
        /// The run.
        run: &'e str,
        /// The stage whose failure began it.
        stage: &'e str,
        /// Why, as JSON of the stage error.
        error: String,
    },
    /// A compensation finished: a resumed rollback does not run it again.
    Compensated {
        /// The run.
        run: &'e str,
        /// The stage.
        stage: &'e str,
        /// The item's key; `None` for the stage's own rollback hook.
        item: Option<&'e str>,
        /// Whether the compensation failed.
        failed: bool,
        /// When it finished.
        at: i64,
    },
    /// What an attempt wrote: its log.
    Log {
        /// The run.
        run: &'e str,
        /// The stage.
        stage: &'e str,
        /// The item's key; `None` for a stage's single unit.
        item: Option<&'e str>,
        /// The attempt, from 1.
        attempt: i64,
        /// When the attempt ended.
        at: i64,
        /// The output, as the attempt attached it.
        output: &'e AttemptOutput,
    },
    /// The metrics collector's samples at the end of an interval.
    Samples {
        /// The run.
        run: &'e str,
        /// When they were taken.
        at: i64,
        /// What was sampled.
        samples: &'e [MetricSample],
    },
    /// A check's latest status.
    Health {
        /// The project the check belongs to.
        project: &'e str,
        /// The check's name.
        check: &'e str,
        /// The stage the check is attached to; `None` for a check attached to none.
        stage: Option<&'e str>,
        /// The status it changed to.
        status: HealthStatus,
        /// When it changed.
        at: i64,
    },
    /// The audit trail: every other journaled event as JSON.
    Event {
        /// The project it belongs to.
        project: &'e str,
        /// The run it belongs to; `None` for an event outside any run.
        run: Option<&'e str>,
        /// When it happened.
        at: i64,
        /// The event's `type` as written on the wire (`attempt-failed`).
        kind: String,
        /// The stage it concerns, if any.
        stage: Option<&'e str>,
        /// The item it concerns, if any.
        item: Option<&'e str>,
        /// The whole event as JSON.
        body: String,
    },
}

/// One item completion.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemDone<'e> {
    /// The project the run belongs to.
    pub project: &'e str,
    /// The run id; `None` for an event published outside any run.
    pub run: Option<&'e str>,
    /// The stage's name.
    pub stage: &'e str,
    /// The item's key.
    pub item: &'e str,
    /// Attempts made, the successful last one included.
    pub attempts: i64,
    /// When it succeeded, in milliseconds since the Unix epoch.
    pub at: i64,
    /// Time from its first attempt's start to its last attempt's end, in milliseconds.
    pub duration_ms: f64,
}

/// Whether an event is written at all. Item and attempt starts and the successful attempts of
/// items are high-volume facts that the outcomes summarise (an item's success is its last
/// attempt's). A single-unit stage's successful attempt is kept: no item outcome stands for it.
pub fn journaled(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::AttemptStarted { .. } | EventKind::AttemptSucceeded { item: Some(_), .. }
    )
}

/// The writes a batch of `project`'s events makes, in order. Consecutive completions share a
/// statement; events that are not journaled do not break a run of them up (a real run
/// interleaves item starts with completions).
pub fn project<'e>(
    project: &'e str,
    events: &'e [Arc<Event>],
    bound: StatementBound,
) -> Result<Vec<Write<'e>>> {
    let mut writes = Vec::new();
    let mut completions: Vec<ItemDone<'e>> = Vec::new();
    let mut bytes = 0;
    for event in events.iter().filter(|e| journaled(&e.kind)) {
        if let EventKind::ItemSucceeded {
            stage,
            item,
            attempts,
            duration,
        } = &event.kind
        {
            let done = ItemDone {
                project,
                run: event.run.as_ref().map(|r| r.as_str()),
                stage,
                item,
                attempts: i64::from(*attempts),
                at: millis(event.at),
                duration_ms: duration.as_secs_f64() * 1000.0,
            };
            let more = statement_bytes(&done);
            if !completions.is_empty() && bytes + more > bound.bytes {
                writes.push(Write::ItemsSucceeded(std::mem::take(&mut completions)));
                bytes = 0;
            }
            bytes += more;
            completions.push(done);
            if completions.len() == bound.rows {
                writes.push(Write::ItemsSucceeded(std::mem::take(&mut completions)));
                bytes = 0;
            }
            continue;
        }
        if !completions.is_empty() {
            writes.push(Write::ItemsSucceeded(std::mem::take(&mut completions)));
            bytes = 0;
        }
        rows_of(project, event, &mut writes)?;
    }
    if !completions.is_empty() {
        writes.push(Write::ItemsSucceeded(completions));
    }
    Ok(writes)
}

fn rows_of<'e>(project: &'e str, event: &'e Event, writes: &mut Vec<Write<'e>>) -> Result<()> {
    let run = event.run.as_ref().map(|r| r.as_str());
    let at = millis(event.at);
    let needs_run = || {
        run.ok_or_else(|| {
            StoreError::Invalid(format!(
                "an event of a run without its run: {:?}",
                event.kind
            ))
        })
    };
    match &event.kind {
        EventKind::RunStarted { pipeline, .. } => writes.push(Write::RunStarted {
            run: needs_run()?,
            project,
            pipeline,
            at,
        }),
        EventKind::RunFinished { status, error, .. } => writes.push(Write::RunFinished {
            run: needs_run()?,
            status: *status,
            at,
            error: error.as_ref().map(|e| e.to_string()),
        }),
        EventKind::StageSucceeded { stage, items, .. }
        | EventKind::StageFailed { stage, items, .. } => writes.push(Write::StageEnded {
            run: needs_run()?,
            stage,
            succeeded: matches!(event.kind, EventKind::StageSucceeded { .. }),
            items: i64::try_from(*items).unwrap_or(i64::MAX),
            at,
        }),
        EventKind::HealingDecision { record } => {
            // The healing table is the whole record of a decision: no audit row besides.
            writes.push(Write::Healing {
                project,
                run: record.run.as_ref().map(|r| r.as_str()),
                at: millis(record.at),
                stage: record.stage.as_deref(),
                strategy: &record.strategy,
                action: record.action.as_str(),
                outcome: record.outcome.as_str(),
                body: serde_json::to_string(record)
                    .map_err(|e| StoreError::Invalid(e.to_string()))?,
            });
            return Ok(());
        }
        EventKind::RollbackStarted { stage, error } => writes.push(Write::RollbackStarted {
            run: needs_run()?,
            stage,
            error: serde_json::to_string(error).map_err(|e| StoreError::Invalid(e.to_string()))?,
        }),
        EventKind::CompensationFinished { stage, item, error } => writes.push(Write::Compensated {
            run: needs_run()?,
            stage,
            item: item.as_deref(),
            failed: error.is_some(),
            at,
        }),
        EventKind::AttemptOutput {
            stage,
            item,
            attempt,
            output,
        } => {
            // The logs table is the whole record of an attempt's output.
            writes.push(Write::Log {
                run: needs_run()?,
                stage,
                item: item.as_deref(),
                attempt: i64::from(*attempt),
                at,
                output,
            });
            return Ok(());
        }
        EventKind::MetricsSampled { samples } => {
            writes.push(Write::Samples {
                run: needs_run()?,
                at,
                samples,
            });
            return Ok(());
        }
        EventKind::HealthChanged { change } => writes.push(Write::Health {
            project,
            check: &change.check,
            stage: change.stage.as_deref(),
            status: change.new_status,
            at: millis(change.at),
        }),
        _ => {}
    }
    let (stage, item) = match &event.kind {
        EventKind::AttemptFailed { stage, item, .. }
        | EventKind::HealingApplied { stage, item, .. }
        | EventKind::CompensationFinished { stage, item, .. } => (Some(stage), item.as_ref()),
        EventKind::ItemFailed { stage, item, .. } | EventKind::ItemAbandoned { stage, item } => {
            (Some(stage), Some(item))
        }
        other => (other.stage(), None),
    };
    // One serialization gives both the body and its `type`.
    let body = serde_json::to_value(event).map_err(|e| StoreError::Invalid(e.to_string()))?;
    writes.push(Write::Event {
        project,
        run,
        at,
        kind: body["type"].as_str().unwrap_or("event").to_owned(),
        stage: stage.map(|s| &**s),
        item: item.map(|i| &**i),
        body: body.to_string(),
    });
    Ok(())
}

/// The completions of `done` that were journaled already (an item completed again, when a
/// restart runs its stage from the start): the items table keeps the first, so each is kept as
/// an `item-succeeded` event, and what is read back counts every completion the bus published.
/// `inserted` are the (run, stage, item) keys the backend's insert did add: each stands for the
/// first of its completions in `done`, and any later one in the same batch is kept as an event.
pub fn completed_again<'e>(
    done: &[ItemDone<'e>],
    mut inserted: std::collections::HashSet<(String, String, String)>,
) -> Result<Vec<Write<'e>>> {
    let mut writes = Vec::new();
    for item in done {
        let key = (
            item.run.unwrap_or_default().to_owned(),
            item.stage.to_owned(),
            item.item.to_owned(),
        );
        if inserted.remove(&key) {
            continue;
        }
        let event = read_back(
            item.run.map(RunId::new),
            item.at,
            EventKind::ItemSucceeded {
                stage: item.stage.into(),
                item: item.item.into(),
                attempts: u32::try_from(item.attempts).unwrap_or(u32::MAX),
                duration: Duration::try_from_secs_f64(item.duration_ms / 1000.0)
                    .unwrap_or_default(),
            },
        );
        writes.push(Write::Event {
            project: item.project,
            run: item.run,
            at: item.at,
            kind: "item-succeeded".to_owned(),
            stage: Some(item.stage),
            item: Some(item.item),
            body: serde_json::to_string(&event).map_err(|e| StoreError::Invalid(e.to_string()))?,
        });
    }
    Ok(writes)
}

/// What one read of the journal found, per table: each row's position and, when it could be
/// read back, its project and event. Every backend reads its tables into this and
/// [`merge`](Self::merge)s.
#[derive(Debug, Default)]
pub struct Found {
    /// Events, by id.
    pub events: Vec<(i64, Option<(String, Event)>)>,
    /// Item completions, by position.
    pub items: Vec<(i64, Option<(String, Event)>)>,
    /// Healing decisions, by id.
    pub decisions: Vec<(i64, Option<(String, Event)>)>,
    /// Sample ticks, by the position of the tick's last row.
    pub samples: Vec<(i64, Option<(String, Event)>)>,
}

impl Found {
    /// The entries oldest first, each table's kept in its own order, each with the cursor
    /// after it; and the cursor past everything found.
    pub fn merge(self, from: JournalCursor) -> (Vec<JournalEntry>, JournalCursor) {
        let mut tables = [self.events, self.items, self.decisions, self.samples]
            .map(|rows| rows.into_iter().peekable());
        let mut cursor = from;
        let mut entries = Vec::new();
        loop {
            // The table whose next row is oldest; a row that cannot be read goes first.
            let next = tables
                .iter_mut()
                .enumerate()
                .filter_map(|(i, rows)| {
                    let (_, entry) = rows.peek()?;
                    Some((entry.as_ref().map(|(_, e)| e.at), i))
                })
                .min();
            let Some((_, table)) = next else { break };
            let Some((position, entry)) = tables[table].next() else {
                break;
            };
            let table = JournalTable::ALL[table];
            *cursor.position_mut(table) = position;
            if let Some((project, event)) = entry {
                entries.push(JournalEntry {
                    project,
                    table,
                    cursor,
                    event,
                });
            }
        }
        (entries, cursor)
    }
}

/// An event read back from a table that keeps no bus position: `seq` 0.
pub fn read_back(run: Option<RunId>, at_ms: i64, kind: EventKind) -> Event {
    Event {
        seq: 0,
        at: UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0)),
        run,
        kind,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use self_healing::event::{EventBus, HandlerKind, RunId};

    use super::*;

    /// A bound of 200 completions in 12 KB, as over a network.
    const BOUND: StatementBound = StatementBound {
        rows: 200,
        bytes: 12 * 1024,
        fixed_text: true,
    };

    #[test]
    fn a_statement_of_completions_stays_within_its_bytes() {
        let bus = EventBus::new();
        let run = RunId::new("r");
        // Keys of 500 bytes: 24 completions fill a statement's 12 KB, not 200.
        let events: Vec<_> = (0..100)
            .map(|i| {
                bus.publish(
                    Some(&run),
                    EventKind::ItemSucceeded {
                        stage: "s".into(),
                        item: format!("{i:0>500}").into(),
                        attempts: 1,
                        duration: Duration::ZERO,
                    },
                )
            })
            .collect();
        let writes = project("p", &events, BOUND).unwrap();
        let sizes: Vec<usize> = writes
            .iter()
            .map(|w| match w {
                Write::ItemsSucceeded(done) => done.len(),
                _ => panic!("only completions"),
            })
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        assert!(sizes.len() >= 4, "{sizes:?}");
        for write in &writes {
            if let Write::ItemsSucceeded(done) = write {
                let bytes: usize = done.iter().map(statement_bytes).sum();
                assert!(bytes <= BOUND.bytes, "{bytes}");
            }
        }
    }

    #[test]
    fn completions_are_batched_across_unjournaled_events_and_flushed_before_others() {
        let bus = EventBus::new();
        let run = RunId::new("r");
        let mut events = Vec::new();
        for i in 0..450 {
            let item: Arc<str> = format!("i{i}").into();
            events.push(bus.publish(
                Some(&run),
                EventKind::AttemptStarted {
                    stage: "s".into(),
                    item: Some(Arc::clone(&item)),
                    attempt: 1,
                    handler: HandlerKind::Primary,
                },
            ));
            events.push(bus.publish(
                Some(&run),
                EventKind::ItemSucceeded {
                    stage: "s".into(),
                    item,
                    attempts: 1,
                    duration: Duration::ZERO,
                },
            ));
        }
        events.push(bus.publish(
            Some(&run),
            EventKind::StageSucceeded {
                stage: "s".into(),
                duration: Duration::ZERO,
                items: 450,
            },
        ));
        let writes = project("p", &events, BOUND).unwrap();
        let shape: Vec<usize> = writes
            .iter()
            .map(|w| match w {
                Write::ItemsSucceeded(batch) => batch.len(),
                _ => 0,
            })
            .collect();
        // Two full statements, the rest flushed before the stage's end, then the stage's rows.
        assert_eq!(shape, [200, 200, 50, 0, 0]);
        assert!(matches!(
            writes[3],
            Write::StageEnded {
                succeeded: true,
                items: 450,
                ..
            }
        ));
        assert!(matches!(&writes[4], Write::Event { kind, .. } if kind == "stage-succeeded"));
    }
}
