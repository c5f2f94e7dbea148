//! Where a stage's items come from: a file read line by line as the stage pulls them, or a glob
//! relative to the pipeline file's folder.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt};

use self_healing::pipeline::ItemSource;
use self_healing::{InvalidConfig, StageError};

/// The longest item an items file may hold: a line without an end would otherwise be read
/// into memory whole.
pub const MAX_ITEM_BYTES: usize = 64 * 1024;

/// Items from a file, one per line, read as the stage pulls them. Blank lines and lines
/// starting with `#` are skipped. The file must be a regular file (a FIFO or a device would
/// never end, or end the run waiting), and no line longer than [`MAX_ITEM_BYTES`].
pub fn file_items(path: PathBuf) -> ItemSource<(), String> {
    ItemSource::stream(move |_: &()| {
        let path = path.clone();
        futures_util::stream::unfold(None, move |reader: Option<ItemReader>| {
            let path = path.clone();
            async move {
                let mut reader = match reader {
                    Some(reader) => reader,
                    None => match ItemReader::open(&path).await {
                        Ok(reader) => reader,
                        Err(why) => {
                            let error =
                                StageError::new(format!("items file {}: {why}", path.display()));
                            return Some((Err(error), None));
                        }
                    },
                };
                match reader.next_item().await {
                    Ok(Some(item)) => Some((Ok(item), Some(reader))),
                    Ok(None) => None,
                    Err(why) => {
                        let error =
                            StageError::new(format!("items file {}: {why}", path.display()));
                        Some((Err(error), None))
                    }
                }
            }
        })
    })
}

/// An items file read line by line, each line bounded.
struct ItemReader {
    file: tokio::io::BufReader<tokio::fs::File>,
    line: usize,
}

impl ItemReader {
    async fn open(path: &Path) -> Result<Self, String> {
        // Looked at before it is opened: opening a FIFO waits for a writer.
        let metadata = tokio::fs::metadata(path).await.map_err(|e| e.to_string())?;
        if !metadata.is_file() {
            return Err("is not a regular file (a FIFO or device is refused)".to_owned());
        }
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| e.to_string())?;
        Ok(ItemReader {
            file: tokio::io::BufReader::new(file),
            line: 0,
        })
    }

    /// The next item, skipping blank and `#` lines; `None` at the end.
    async fn next_item(&mut self) -> Result<Option<String>, String> {
        loop {
            let mut bytes = Vec::new();
            let mut limited = (&mut self.file).take(MAX_ITEM_BYTES as u64 + 1);
            let read = limited
                .read_until(b'\n', &mut bytes)
                .await
                .map_err(|e| e.to_string())?;
            if read == 0 {
                return Ok(None);
            }
            self.line += 1;
            if bytes.len() > MAX_ITEM_BYTES && bytes.last() != Some(&b'\n') {
                return Err(format!(
                    "line {} is longer than {} KiB",
                    self.line,
                    MAX_ITEM_BYTES / 1024
                ));
            }
            let text =
                String::from_utf8(bytes).map_err(|_| format!("line {} is not UTF-8", self.line))?;
            let item = text.trim();
            if !item.is_empty() && !item.starts_with('#') {
                return Ok(Some(item.to_owned()));
            }
        }
    }
}

/// Items from a glob, as paths relative to the pipeline file's folder, in sorted order. The
/// folder's own path is matched literally, whatever characters it holds (`[`, `*`, `?`).
pub fn glob_items(base: &Path, pattern: &str) -> Result<ItemSource<(), String>, InvalidConfig> {
    glob::Pattern::new(pattern)
        .map_err(|e| InvalidConfig::new("items.glob", format!("`{pattern}`: {e}")))?;
    let base = base.to_owned();
    let full = Path::new(&glob::Pattern::escape(&base.to_string_lossy()))
        .join(pattern)
        .to_string_lossy()
        .into_owned();
    Ok(ItemSource::stream(move |_: &()| {
        let base = base.clone();
        let paths: Box<dyn Iterator<Item = Result<String, StageError>> + Send> =
            match glob::glob(&full) {
                Ok(paths) => Box::new(paths.map(move |entry| {
                    entry
                        .map(|path| {
                            path.strip_prefix(&base)
                                .unwrap_or(&path)
                                .to_string_lossy()
                                .into_owned()
                        })
                        .map_err(|e| StageError::new(format!("glob: {e}")))
                })),
                Err(e) => Box::new(std::iter::once(Err(StageError::new(format!(
                    "items.glob `{full}`: {e}"
                ))))),
            };
        futures_util::stream::iter(paths)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use self_healing::pipeline::{SelfHealingPipeline, Stage};

    async fn items(base: &Path, pattern: &str) -> Vec<String> {
        let source = glob_items(base, pattern).unwrap();
        let stage = Stage::for_each("s", source, |_| async { Ok(()) });
        let pipeline = SelfHealingPipeline::builder().stage(stage).build().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&seen);
        pipeline
            .events()
            .add_sink(std::sync::Arc::new(move |e: &self_healing::Event| {
                if let self_healing::EventKind::ItemSucceeded { item, .. } = &e.kind {
                    sink.lock().unwrap().push(item.to_string());
                }
            }));
        assert!(pipeline.execute(()).await.is_success());
        let mut seen = seen.lock().unwrap().clone();
        seen.sort();
        seen
    }

    #[tokio::test]
    async fn a_glob_under_a_folder_with_pattern_characters_matches_its_own_files() {
        let dir = tempfile::tempdir().unwrap();
        for odd in ["legacy [v2]", "what?", "all*", "x[", "plain"] {
            let base = dir.path().join(odd);
            std::fs::create_dir_all(base.join("src")).unwrap();
            std::fs::write(base.join("src/a.cbl"), "").unwrap();
            std::fs::write(base.join("src/b.cbl"), "").unwrap();
            std::fs::write(base.join("src/c.txt"), "").unwrap();
        }
        // A sibling the unescaped pattern `legacy [v2]` would match (`legacy 2`).
        std::fs::create_dir_all(dir.path().join("legacy 2/src")).unwrap();
        std::fs::write(dir.path().join("legacy 2/src/z.cbl"), "").unwrap();
        for odd in ["legacy [v2]", "what?", "all*", "x[", "plain"] {
            assert_eq!(
                items(&dir.path().join(odd), "src/*.cbl").await,
                ["src/a.cbl", "src/b.cbl"],
                "{odd}"
            );
        }
    }
}
