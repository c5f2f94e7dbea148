//! Where a stage's items come from: a file read line by line as the stage pulls them, or a glob
//! relative to the pipeline file's folder.

use std::path::{Path, PathBuf};

use tokio::io::AsyncBufReadExt;

use self_healing::pipeline::ItemSource;
use self_healing::{InvalidConfig, StageError};

/// Items from a file, one per line, read as the stage pulls them. Blank lines and lines
/// starting with `#` are skipped.
pub fn file_items(path: PathBuf) -> ItemSource<(), String> {
    ItemSource::stream(move |_: &()| {
        let path = path.clone();
        futures_util::stream::unfold(
            None,
            move |lines: Option<tokio::io::Lines<tokio::io::BufReader<tokio::fs::File>>>| {
                let path = path.clone();
                async move {
                    let mut lines = match lines {
                        Some(lines) => lines,
                        None => match tokio::fs::File::open(&path).await {
                            Ok(file) => tokio::io::BufReader::new(file).lines(),
                            Err(e) => {
                                let error =
                                    StageError::new(format!("items file {}: {e}", path.display()));
                                return Some((Err(error), None));
                            }
                        },
                    };
                    loop {
                        match lines.next_line().await {
                            Ok(Some(line)) => {
                                let item = line.trim();
                                if item.is_empty() || item.starts_with('#') {
                                    continue;
                                }
                                return Some((Ok(item.to_owned()), Some(lines)));
                            }
                            Ok(None) => return None,
                            Err(e) => {
                                let error =
                                    StageError::new(format!("items file {}: {e}", path.display()));
                                return Some((Err(error), None));
                            }
                        }
                    }
                }
            },
        )
    })
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
