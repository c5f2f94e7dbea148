//! The user's tools: `init` writes pipelines that validate and run as they are and never
//! overwrites; the shells load the completion scripts; `manpages` writes a page per
//! subcommand that `man` renders; `--version` names the commit and the features; `schema`
//! describes every pipeline the loader accepts, and refuses a misspelt key, as a real validator
//! (check-jsonschema) reads it.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{Workspace, migrationpilot, tool};

#[test]
fn each_init_template_validates_runs_and_is_never_written_over() {
    for (template, made) in [
        ("code-migration", "out/rust/payroll.rs"),
        ("etl", "warehouse/customers.csv"),
        ("http", "copy/105.json"),
    ] {
        let work = Workspace::new();
        let dir = work.path().join(template);
        work.cmd()
            .args(["init", dir.to_str().unwrap(), "--template", template])
            .assert()
            .success();
        work.cmd()
            .current_dir(&dir)
            .args(["validate", "pipeline.yaml"])
            .assert()
            .success();
        let run = work
            .cmd()
            .current_dir(&dir)
            .args(["run", "pipeline.yaml"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{template}: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(dir.join(made).is_file(), "{template} made no {made}");
        // The schema its first line points editors at, as this binary prints it.
        let pipeline = std::fs::read_to_string(dir.join("pipeline.yaml")).unwrap();
        assert!(
            pipeline.starts_with("# yaml-language-server: $schema=pipeline.schema.json\n"),
            "{pipeline}"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("pipeline.schema.json")).unwrap(),
            printed_schema(),
            "{template}"
        );
        if template == "etl" {
            // A second run of the same source loads no batch again.
            work.cmd()
                .current_dir(&dir)
                .args(["run", "pipeline.yaml"])
                .assert()
                .success();
            let rows = std::fs::read_to_string(dir.join(made)).unwrap();
            assert_eq!(rows.lines().count(), 23, "{rows}");
        }
        // A second init writes nothing and names what exists.
        let before = std::fs::read_to_string(dir.join("pipeline.yaml")).unwrap();
        let again = work
            .cmd()
            .args(["init", dir.to_str().unwrap(), "--template", template])
            .output()
            .unwrap();
        assert_eq!(again.status.code(), Some(2), "{template}");
        let said = String::from_utf8_lossy(&again.stderr);
        assert!(said.contains("pipeline.yaml"), "{said}");
        assert_eq!(
            std::fs::read_to_string(dir.join("pipeline.yaml")).unwrap(),
            before
        );
    }
}

#[test]
fn init_writes_into_the_current_folder_by_default() {
    let work = Workspace::new();
    work.cmd().arg("init").assert().success();
    assert!(work.path().join("pipeline.yaml").is_file());
    assert!(work.path().join("scripts/analyze.sh").is_file());
}

/// The completion script for `shell`, written to a file in `work`.
fn completions(work: &Workspace, shell: &str) -> std::path::PathBuf {
    let out = migrationpilot()
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!out.stdout.is_empty());
    work.file(
        &format!("completions.{shell}"),
        &String::from_utf8(out.stdout).unwrap(),
    )
}

#[test]
fn bash_loads_the_completions_and_completes_subcommands_and_flags() {
    let work = Workspace::new();
    let script = completions(&work, "bash");
    let shown = Command::new("bash")
        .arg("-c")
        .arg(format!(
            r#"source '{}' && complete -p migrationpilot &&
               COMP_WORDS=(migrationpilot he); COMP_CWORD=1; _migrationpilot migrationpilot he migrationpilot; echo "${{COMPREPLY[@]}}" &&
               COMP_WORDS=(migrationpilot run --re); COMP_CWORD=2; _migrationpilot migrationpilot --re run; echo "${{COMPREPLY[@]}}""#,
            script.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("-F _migrationpilot"), "{text}");
    assert!(lines[1].split(' ').any(|w| w == "healing"), "{text}");
    assert!(lines[1].split(' ').any(|w| w == "health"), "{text}");
    assert!(lines[2].split(' ').any(|w| w == "--resume"), "{text}");
}

#[test]
#[cfg_attr(missing_zsh, ignore = "needs zsh: source .ci/services.sh start")]
fn zsh_parses_its_completions() {
    let Some(zsh) = tool("MIGRATIONPILOT_TEST_ZSH", "zsh") else {
        return;
    };
    let work = Workspace::new();
    let script = completions(&work, "zsh");
    let parsed = Command::new(zsh).arg("-n").arg(&script).output().unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
}

#[test]
#[cfg_attr(missing_fish, ignore = "needs fish: source .ci/services.sh start")]
fn fish_parses_its_completions() {
    let Some(fish) = tool("MIGRATIONPILOT_TEST_FISH", "fish") else {
        return;
    };
    let work = Workspace::new();
    let script = completions(&work, "fish");
    let parsed = Command::new(fish)
        .arg("--no-execute")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "{}",
        String::from_utf8_lossy(&parsed.stderr)
    );
}

#[test]
fn manpages_are_written_for_every_subcommand_and_render() {
    let work = Workspace::new();
    work.cmd().args(["manpages", "man1"]).assert().success();
    let mut pages: Vec<String> = std::fs::read_dir(work.path().join("man1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for page in [
        "migrationpilot.1",
        "migrationpilot-run.1",
        "migrationpilot-init.1",
        "migrationpilot-runs-show.1",
        "migrationpilot-healing-history.1",
        "migrationpilot-completions.1",
    ] {
        assert!(pages.iter().any(|p| p == page), "no {page} in {pages:?}");
    }
    let run = work.read("man1/migrationpilot-run.1");
    assert!(run.contains(".TH migrationpilot-run 1"), "{run}");
    assert!(run.contains("resume"), "{run}");
    assert!(
        run.contains("store"),
        "the global --store is on every page: {run}"
    );
    // `man` (Debian's man-db) formats it as a person reads it.
    if let Ok(shown) = Command::new("man")
        .args(["-l", "-P", "cat"])
        .arg(work.path().join("man1/migrationpilot-run.1"))
        .env("MANWIDTH", "100")
        .output()
    {
        // Words as a person reads them: man justifies lines with extra spaces.
        let text = String::from_utf8_lossy(&shown.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            shown.status.success(),
            "{}",
            String::from_utf8_lossy(&shown.stderr)
        );
        assert!(text.contains("migrationpilot run"), "{text}");
        assert!(text.contains("resume"), "{text}");
    }
}

#[test]
fn the_version_names_the_commit_and_the_features() {
    let out = migrationpilot().arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.starts_with(&format!(
            "migrationpilot {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    let commit = text
        .split("(commit ")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap();
    // Built from a git checkout (as the tests are), the commit is known.
    let checkout = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.git");
    if checkout.exists() {
        assert!(
            commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{text}"
        );
    } else {
        assert_eq!(commit, "unknown", "{text}");
    }
    // The tests build with every feature.
    assert!(text.contains("features: postgres, mysql, redis)"), "{text}");
}

/// What `migrationpilot schema` prints.
fn printed_schema() -> String {
    let out = migrationpilot().arg("schema").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_committed_schema_is_what_schema_prints() {
    let printed = printed_schema();
    let committed =
        std::fs::read_to_string(root().join("docs/pipeline.schema.json")).unwrap_or_default();
    let first_difference = printed
        .lines()
        .zip(committed.lines())
        .position(|(a, b)| a != b)
        .map_or(
            printed.lines().count().min(committed.lines().count()),
            |i| i,
        )
        + 1;
    assert!(
        printed == committed,
        "docs/pipeline.schema.json is not what `migrationpilot schema` prints (from line \
         {first_difference}): regenerate it with `cargo run -- schema > docs/pipeline.schema.json`"
    );
}

/// Runs check-jsonschema on `files` against `schema`: whether it accepted them all, and what it
/// said.
fn check_jsonschema(program: &Path, schema: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(program)
        .arg("--schemafile")
        .arg(schema)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", program.display()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
#[cfg_attr(
    missing_check_jsonschema,
    ignore = "needs check-jsonschema: source .ci/services.sh start"
)]
fn the_example_and_the_templates_meet_the_schema_their_first_line_names() {
    let Some(checker) = tool("MIGRATIONPILOT_TEST_CHECK_JSONSCHEMA", "check-jsonschema") else {
        return;
    };
    let work = Workspace::new();
    let schema = work.file("pipeline.schema.json", &printed_schema());
    let example = root().join("examples/migration/pipeline.yaml");
    let mut files = vec![example.clone()];
    for template in ["code-migration", "etl", "http"] {
        files.push(root().join(format!(
            "crates/migrationpilot/templates/{template}/pipeline.yaml"
        )));
    }
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let named = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# yaml-language-server: $schema="));
        assert!(named.is_some(), "{} names no schema", file.display());
    }
    assert!(
        root().join("docs/pipeline.schema.json").is_file(),
        "the example's first line names docs/pipeline.schema.json"
    );
    let (accepted, said) = check_jsonschema(&checker, &schema, &files);
    assert!(accepted, "{said}");
    // The line is a comment to the loader.
    migrationpilot()
        .arg("validate")
        .arg(&example)
        .assert()
        .success();
}

#[test]
#[cfg_attr(
    missing_check_jsonschema,
    ignore = "needs check-jsonschema: source .ci/services.sh start"
)]
fn every_test_pipeline_that_validate_accepts_the_schema_accepts() {
    let Some(checker) = tool("MIGRATIONPILOT_TEST_CHECK_JSONSCHEMA", "check-jsonschema") else {
        return;
    };
    let work = Workspace::new();
    let schema = work.file("pipeline.schema.json", &printed_schema());
    let found = test_pipelines();
    let mut accepted: Vec<(PathBuf, String)> = Vec::new();
    for (i, (origin, text, extension)) in found.iter().enumerate() {
        let path = work.file(&format!("pipelines/{i:03}.{extension}"), text);
        // Each variable it names is set (to a number, which most settings take).
        let variables = text
            .split("${")
            .skip(1)
            .filter_map(|rest| rest.split_once('}'))
            .map(|(name, _)| (name, "1"));
        let validated = migrationpilot()
            .current_dir(work.path())
            .envs(variables)
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        if validated.status.success() {
            accepted.push((path, origin.clone()));
        }
    }
    // So that the test cannot pass on nothing: 55 of 82 validated when it was written (the
    // others are mistakes on purpose, or templates whose placeholders hold YAML).
    assert!(
        accepted.len() >= 50,
        "only {} of the {} pipelines found in the tests' sources validate",
        accepted.len(),
        found.len()
    );
    let files: Vec<PathBuf> = accepted.iter().map(|(path, _)| path.clone()).collect();
    let (all, said) = check_jsonschema(&checker, &schema, &files);
    let origins: Vec<String> = accepted
        .iter()
        .map(|(path, origin)| format!("  {} is {origin}", path.display()))
        .collect();
    assert!(
        all,
        "check-jsonschema refuses pipelines that `validate` accepts:\n{said}\nthe files:\n{}",
        origins.join("\n")
    );
}

#[test]
#[cfg_attr(
    missing_check_jsonschema,
    ignore = "needs check-jsonschema: source .ci/services.sh start"
)]
fn a_misspelt_key_is_refused_by_validate_and_by_the_schema() {
    let Some(checker) = tool("MIGRATIONPILOT_TEST_CHECK_JSONSCHEMA", "check-jsonschema") else {
        return;
    };
    let work = Workspace::new();
    let schema = work.file("pipeline.schema.json", &printed_schema());
    for (name, text, key) in [
        (
            "retry.yaml",
            "project: p\nstages:\n  - name: load\n    command: [\"true\"]\nhealing:\n  strategies:\n    - name: again\n      triggers: [{ type: error }]\n      action: retry\n      config: { maxAtempts: 3 }\n",
            "maxAtempts",
        ),
        (
            "stage.yaml",
            "project: p\nstages:\n  - name: load\n    comand: [\"true\"]\n",
            "comand",
        ),
        (
            "retry.toml",
            "project = \"p\"\n[[stages]]\nname = \"load\"\ncommand = [\"true\"]\n[[healing.strategies]]\nname = \"again\"\ntriggers = [{ type = \"error\" }]\naction = \"retry\"\nconfig = { maxAtempts = 3 }\n",
            "maxAtempts",
        ),
    ] {
        let path = work.file(name, text);
        let validated = migrationpilot()
            .arg("validate")
            .arg(&path)
            .output()
            .unwrap();
        let told = String::from_utf8_lossy(&validated.stderr);
        assert!(
            !validated.status.success() && told.contains(key),
            "validate {name}: {told}"
        );
        let (accepted, said) = check_jsonschema(&checker, &schema, &[path]);
        assert!(
            !accepted && said.contains(key),
            "check-jsonschema {name}: {said}"
        );
    }
}

/// The pipelines the tests write: each string literal (raw or not) in
/// `crates/migrationpilot/tests/**/*.rs` whose text starts with `project:` (YAML) or has a
/// `project =` line (TOML), with where it is and its extension. One that is `format!`'s
/// template has its braces unescaped and each `{placeholder}` made a plain word.
fn test_pipelines() -> Vec<(String, String, &'static str)> {
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
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut files = Vec::new();
    sources(&tests, &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let code = std::fs::read_to_string(&file).unwrap();
        for (at, text, template) in string_literals(&code) {
            let text = if template { unformat(&text) } else { text };
            let extension = if text.trim_start().starts_with("project:") {
                "yaml"
            } else if text
                .lines()
                .any(|l| l.trim_start().starts_with("project ="))
            {
                "toml"
            } else {
                continue;
            };
            let line = code[..at].matches('\n').count() + 1;
            let name = file.strip_prefix(&tests).unwrap_or(&file).display();
            found.push((format!("tests/{name}:{line}"), text, extension));
        }
    }
    found
}

/// The string literals of Rust source: where each starts, its text, and whether it is the
/// template of a `format!`. Comments and character literals are skipped.
fn string_literals(code: &str) -> Vec<(usize, String, bool)> {
    let bytes = code.as_bytes();
    let template = |at: usize| code[..at].trim_end().ends_with("format!(");
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let after_identifier =
            i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                i = code[i..].find('\n').map_or(bytes.len(), |n| i + n);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = code[i..].find("*/").map_or(bytes.len(), |n| i + n + 2);
            }
            b'\'' => {
                // A character literal ('"', '\'', '→') or a lifetime.
                let mut chars = code[i + 1..].char_indices();
                i += match (chars.next(), chars.next()) {
                    (Some((_, '\\')), _) => code[i + 2..].find('\'').map_or(1, |n| n + 3),
                    (Some(_), Some((n, '\''))) => n + 2,
                    _ => 1,
                };
            }
            b'r' if !after_identifier && matches!(bytes.get(i + 1), Some(b'"' | b'#')) => {
                let hashes = bytes[i + 1..].iter().take_while(|b| **b == b'#').count();
                if bytes.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let start = i + 2 + hashes;
                let close = format!("\"{}", "#".repeat(hashes));
                let end = code[start..]
                    .find(&close)
                    .map_or(bytes.len(), |n| start + n);
                found.push((i, code[start..end].to_owned(), template(i)));
                i = end + close.len();
            }
            b'"' => {
                let (text, end) = unescape(code, i + 1);
                found.push((i, text, template(i)));
                i = end;
            }
            _ => i += 1,
        }
    }
    found
}

/// The text of the ordinary string literal whose body starts at `start`, and where it ends.
fn unescape(code: &str, start: usize) -> (String, usize) {
    let mut text = String::new();
    let mut chars = code[start..].char_indices().peekable();
    while let Some((n, c)) = chars.next() {
        match c {
            '"' => return (text, start + n + 1),
            '\\' => match chars.next() {
                Some((_, 'n')) => text.push('\n'),
                Some((_, 't')) => text.push('\t'),
                Some((_, 'r')) => text.push('\r'),
                Some((_, '0')) => text.push('\0'),
                Some((_, '\n')) => {
                    while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
                        chars.next();
                    }
                }
                Some((_, 'u')) => {
                    let digits: String = chars
                        .by_ref()
                        .map(|(_, c)| c)
                        .take_while(|c| *c != '}')
                        .filter(char::is_ascii_hexdigit)
                        .collect();
                    text.extend(
                        u32::from_str_radix(&digits, 16)
                            .ok()
                            .and_then(char::from_u32),
                    );
                }
                Some((_, 'x')) => {
                    let digits: String = chars.by_ref().take(2).map(|(_, c)| c).collect();
                    text.extend(u8::from_str_radix(&digits, 16).ok().map(char::from));
                }
                Some((_, other)) => text.push(other),
                None => {}
            },
            c => text.push(c),
        }
    }
    (text, code.len())
}

/// A `format!` template as text: `{{` and `}}` as braces, each `{placeholder}` a plain word
/// (a number after a `:`, where a URL's port goes).
fn unformat(template: &str) -> String {
    let mut text = String::new();
    let mut rest = template;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("{{") || rest.starts_with("}}") {
            text.push(c);
            rest = &rest[2..];
        } else if c == '{' {
            let end = rest.find('}').map_or(rest.len(), |n| n + 1);
            text.push_str(if text.ends_with(':') {
                "9"
            } else {
                "placeholder"
            });
            rest = &rest[end..];
        } else {
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    text
}
