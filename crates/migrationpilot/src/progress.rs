//! What a run prints while it goes: live progress bars per stage on a terminal, plain lines
//! otherwise, or one JSON object per event. It prints committed events only, and through
//! [`terminal`]: what stages put in events is escaped, and a reader that went away ends the
//! printing, not the run.

#![deny(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{HashMap, HashSet};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::mpsc::UnboundedReceiver;

use self_healing::event::{Event, EventKind};

use crate::terminal;

/// How events are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// One JSON object per event, one per line.
    Json,
    /// One plain line per event worth showing.
    Lines,
    /// Progress bars, colored unless `NO_COLOR` is set.
    Bars {
        /// Whether the bars use color.
        color: bool,
    },
}

impl Output {
    /// Bars on a terminal, lines otherwise; JSON when asked.
    pub fn choose(json: bool) -> Self {
        if json {
            Output::Json
        } else if std::io::stdout().is_terminal() {
            Output::Bars {
                color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
            }
        } else {
            Output::Lines
        }
    }
}

/// Prints events until the run finishes.
pub async fn print(mut events: UnboundedReceiver<Arc<Event>>, output: Output) {
    let mut bars = match output {
        Output::Bars { color } => Some(Bars::new(color)),
        _ => None,
    };
    let mut warned = HashSet::new();
    while let Some(event) = events.recv().await {
        match (&mut bars, output) {
            (_, Output::Json) => terminal::print_json(&*event),
            (Some(bars), _) => {
                bars.show(&event);
                if let Some(line) = invalid_json_once(&mut warned, &event) {
                    let _ = bars.multi.println(terminal::escape(&line));
                }
            }
            (None, _) => {
                if let Some(line) = describe(&event) {
                    terminal::print_line(format_args!("{line}"));
                }
                if let Some(line) = invalid_json_once(&mut warned, &event) {
                    terminal::print_line(format_args!("{line}"));
                }
            }
        }
        if matches!(event.kind, EventKind::RunFinished { .. }) {
            break;
        }
    }
}

/// The first time a stage's command wrote a last error line that looks like a JSON error
/// line but is not one: said once per stage, since every attempt will likely do the same.
fn invalid_json_once(warned: &mut HashSet<Arc<str>>, event: &Event) -> Option<String> {
    let EventKind::AttemptFailed { stage, error, .. } = &event.kind else {
        return None;
    };
    let why = error.invalid_json()?;
    warned.insert(Arc::clone(stage)).then(|| {
        format!(
            "  ! {stage}: its command's last error line starts like a JSON error line but is {why}; it was read as text"
        )
    })
}

/// A spinner per running stage with its count of completed units; everything else as lines
/// above them.
struct Bars {
    multi: MultiProgress,
    stages: HashMap<Arc<str>, ProgressBar>,
    style: ProgressStyle,
}

impl Bars {
    fn new(color: bool) -> Self {
        let template = if color {
            "{spinner:.cyan} {prefix:.bold} {pos} done {elapsed:.dim} {msg}"
        } else {
            "{spinner} {prefix} {pos} done {elapsed} {msg}"
        };
        Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            stages: HashMap::new(),
            style: ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        }
    }

    fn show(&mut self, event: &Event) {
        match &event.kind {
            EventKind::StageStarted { stage, .. } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(self.style.clone());
                bar.set_prefix(terminal::escape(stage).into_owned());
                bar.enable_steady_tick(Duration::from_millis(120));
                self.stages.insert(Arc::clone(stage), bar);
                return;
            }
            EventKind::ItemSucceeded { stage, .. }
            | EventKind::AttemptSucceeded {
                stage, item: None, ..
            } => {
                if let Some(bar) = self.stages.get(stage) {
                    bar.inc(1);
                }
                return;
            }
            EventKind::ItemsSkipped { stage, count } => {
                if let Some(bar) = self.stages.get(stage) {
                    bar.inc(*count);
                }
            }
            EventKind::StageHeld { stage, held_by } => {
                if let Some(bar) = self.stages.get(stage) {
                    bar.set_message(terminal::escape(&held_message(held_by)).into_owned());
                }
            }
            EventKind::StageSucceeded { stage, .. } | EventKind::StageFailed { stage, .. } => {
                if let Some(bar) = self.stages.remove(stage) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
            }
            _ => {}
        }
        if let Some(line) = describe(event) {
            let _ = self.multi.println(terminal::escape(&line));
        }
    }
}

/// One line for a person, for the events worth one; as the stage wrote it, escaped where it is
/// printed.
pub fn describe(event: &Event) -> Option<String> {
    let item = |item: &Option<std::sync::Arc<str>>| {
        item.as_deref().map(|i| format!("/{i}")).unwrap_or_default()
    };
    Some(match &event.kind {
        EventKind::RunStarted { pipeline, stages } => {
            format!("{pipeline}: {} stage(s)", stages.len())
        }
        EventKind::ChaosInjecting { faults, seed } => {
            let mut lines: Vec<String> = faults
                .iter()
                .map(|fault| format!("chaos: injecting {fault}"))
                .collect();
            lines.push(format!(
                "chaos: seed {seed} (`--seed {seed}` draws the same failures again)"
            ));
            lines.join("\n")
        }
        EventKind::StageStarted { stage, .. } => format!("▶ {stage}"),
        EventKind::StageSkipped { stage } => format!("✔ {stage}: completed before, skipped"),
        EventKind::ItemsSkipped { stage, count } => {
            format!("  {stage}: {count} item(s) completed before, skipped")
        }
        EventKind::StageSucceeded {
            stage,
            duration,
            items,
        } => {
            format!("✔ {stage}: {items} unit(s) in {duration:.1?}")
        }
        EventKind::StageFailed { stage, error, .. } => format!("✘ {stage}: {error}"),
        EventKind::AttemptFailed {
            stage,
            item: it,
            attempt,
            error,
            ..
        } => {
            format!(
                "  ✗ {stage}{} attempt {attempt}: {}",
                item(it),
                error.message()
            )
        }
        EventKind::ItemFailed {
            stage,
            item,
            attempts,
            error,
        } => {
            format!("  ✗ {stage}/{item} after {attempts} attempt(s): {error}")
        }
        EventKind::HealingApplied {
            stage,
            item: it,
            action,
            detail,
        } => {
            format!("  ⟳ {action} {stage}{}: {detail}", item(it))
        }
        EventKind::CompensationFinished {
            stage,
            item: it,
            error,
        } => match error {
            None => format!("  ↶ compensated {stage}{}", item(it)),
            Some(error) => format!("  ↶ compensation of {stage}{} failed: {error}", item(it)),
        },
        EventKind::StageHeld { stage, held_by } if held_by.is_empty() => {
            format!("  ▶ {stage}: work resumed")
        }
        EventKind::StageHeld { stage, held_by } => {
            format!("  ⏸ {stage}: {}", held_message(held_by))
        }
        EventKind::HealthChanged { change } => format!(
            "  ♥ {}: {} → {}",
            change.check, change.old_status, change.new_status
        ),
        EventKind::AlertFailed { channel, error, .. } => {
            format!("  ! alert via {channel} failed: {error}")
        }
        _ => return None,
    })
}

/// What holds a stage's work, for its spinner; empty when nothing does.
fn held_message(held_by: &[Arc<str>]) -> String {
    if held_by.is_empty() {
        return String::new();
    }
    let checks: Vec<String> = held_by.iter().map(|c| format!("`{c}`")).collect();
    format!("waiting for {} (unhealthy)", checks.join(", "))
}
