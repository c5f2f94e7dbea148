//! The library's modules form one-way layers (docs/ARCHITECTURE.md, "Layers"): a module uses
//! only modules below it. This test reads every source file and fails on a use of a module
//! above, or of an undeclared module, naming the file and the path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom up. A module may use the ones listed before it, never one after it.
const LAYERS: &[&str] = &[
    "error",
    "clock",
    "duration",
    "classify",
    "serde_ms",
    "de",
    "http",
    "process",
    "chaos",
    "resilience",
    "event",
    "metrics",
    "pipeline",
    "health",
    "alert",
    "healing",
    "config",
    "export",
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/healing/actions/retry.rs` → `healing`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib").then(|| name.to_owned())
}

/// The code of a file without its unit tests, which may look anywhere.
fn without_unit_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    }
}

/// Every `crate::name` the text uses, including inside `crate::{a, b::c}` groups.
fn used_modules(text: &str) -> Vec<(String, usize)> {
    let mut used = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find("crate::") {
        let at = from + i;
        let rest = &text[at + "crate::".len()..];
        let line = text[..at].matches('\n').count() + 1;
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                if !name.is_empty() {
                    used.push((name, line));
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            // `crate::BoxFuture` and other root items are below every module.
            if !name.is_empty() && rest[name.len()..].starts_with("::") {
                used.push((name, line));
            }
        }
        from = at + "crate::".len();
    }
    used
}

#[test]
fn no_module_uses_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = 0;
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let Some(own) = rank(&module) else {
            wrong
                .entry(module.clone())
                .or_default()
                .push(format!("{}: not in LAYERS", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (used, line) in used_modules(without_unit_tests(&text)) {
            seen += 1;
            match rank(&used) {
                Some(theirs) if theirs <= own => {}
                Some(_) => wrong.entry(module.clone()).or_default().push(format!(
                    "{}:{line}: uses `crate::{used}`, a layer above `{module}`",
                    file.display()
                )),
                None => wrong.entry(module.clone()).or_default().push(format!(
                    "{}:{line}: uses `crate::{used}`, which is not in LAYERS",
                    file.display()
                )),
            }
        }
    }
    assert!(
        seen > 50,
        "the scan found only {seen} uses: is it reading the sources?"
    );
    assert!(
        wrong.is_empty(),
        "modules using a layer above them (bottom up: {}):\n{}",
        LAYERS.join(" → "),
        wrong.into_values().flatten().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_scan_sees_paths_and_groups() {
    let uses = used_modules(
        "use crate::event::{A, B};\nuse crate::{healing, pipeline::X};\ncrate::BoxFuture<'a>",
    );
    let names: Vec<&str> = uses.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["event", "healing", "pipeline"]);
}
