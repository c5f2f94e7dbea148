//! The user's tools: `init` writes pipelines that validate and run as they are and never
//! overwrites; the shells load the completion scripts; `manpages` writes a page per
//! subcommand that `man` renders; `--version` names the commit and the features.

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
