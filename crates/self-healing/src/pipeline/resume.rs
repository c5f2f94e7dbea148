//! What earlier attempts of a run did, so a resumed run neither repeats nor forgets it.

use std::collections::{HashMap, HashSet};

use crate::error::StageError;

/// What earlier attempts of a run did, read back from a journal for `run --resume`.
///
/// A resumed run skips completed stages (`stage-skipped`) and completed items of the stage it
/// goes on with (`items-skipped`); they still count as completed, for progress and for
/// compensation on rollback. A run that was rolling back when it stopped resumes as a rollback:
/// it compensates, newest first, what is left of the completed items and stages, runs no stage
/// forward, and ends rolled back.
///
/// ```
/// use self_healing::pipeline::Resume;
/// use self_healing::StageError;
///
/// let mut resume = Resume::default();
/// resume.stage_completed("analysis");
/// resume.item_completed("analysis", "a.cbl");
/// resume.item_completed("analysis", "b.cbl");
/// resume.compensated("analysis", Some("b.cbl"));
/// resume.rolling_back("design", StageError::critical("schema corrupted"));
/// assert!(resume.is_item_completed("analysis", "a.cbl"));
/// assert!(resume.is_compensated("analysis", Some("b.cbl")));
/// assert_eq!(resume.rollback().map(|(stage, _)| stage), Some("design"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resume {
    stages: HashSet<String>,
    /// Per stage: each completed item's key and its place in completion order.
    items: HashMap<String, HashMap<String, usize>>,
    compensated: HashSet<(String, Option<String>)>,
    rolling_back: Option<(String, StageError)>,
}

impl Resume {
    /// `stage` completed.
    pub fn stage_completed(&mut self, stage: impl Into<String>) {
        self.stages.insert(stage.into());
    }

    /// The item keyed `item` of `stage` completed; call in completion order.
    pub fn item_completed(&mut self, stage: &str, item: impl Into<String>) {
        let items = self.items.entry(stage.to_owned()).or_default();
        let order = items.len();
        items.entry(item.into()).or_insert(order);
    }

    /// A compensation ran: of the item keyed `item`, or with `None` the stage's own rollback
    /// hook. A resumed rollback does not run it again.
    pub fn compensated(&mut self, stage: impl Into<String>, item: Option<impl Into<String>>) {
        self.compensated
            .insert((stage.into(), item.map(Into::into)));
    }

    /// The run was rolling back, after `stage` failed with `error`.
    pub fn rolling_back(&mut self, stage: impl Into<String>, error: StageError) {
        self.rolling_back = Some((stage.into(), error));
    }

    /// Whether `stage` completed.
    pub fn is_stage_completed(&self, stage: &str) -> bool {
        self.stages.contains(stage)
    }

    /// Whether the item keyed `item` of `stage` completed.
    pub fn is_item_completed(&self, stage: &str, item: &str) -> bool {
        self.completion(stage, item).is_some()
    }

    /// The item's place in its stage's completion order, if it completed.
    pub fn completion(&self, stage: &str, item: &str) -> Option<usize> {
        self.items.get(stage)?.get(item).copied()
    }

    /// How many items of `stage` completed.
    pub fn items_completed(&self, stage: &str) -> usize {
        self.items.get(stage).map_or(0, HashMap::len)
    }

    /// How many items completed, over every stage.
    pub fn all_items_completed(&self) -> usize {
        self.items.values().map(HashMap::len).sum()
    }

    /// How many stages completed.
    pub fn stages_completed(&self) -> usize {
        self.stages.len()
    }

    /// Whether the compensation of `item` of `stage` (or with `None` its rollback hook) ran.
    pub fn is_compensated(&self, stage: &str, item: Option<&str>) -> bool {
        self.compensated
            .contains(&(stage.to_owned(), item.map(str::to_owned)))
    }

    /// The stage whose failure began a rollback the run was in when it stopped, and its error.
    pub fn rollback(&self) -> Option<(&str, &StageError)> {
        self.rolling_back.as_ref().map(|(s, e)| (s.as_str(), e))
    }
}
