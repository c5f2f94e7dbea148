//! Says what `--version` prints besides the version: the commit built (`MIGRATIONPILOT_COMMIT`,
//! from git when the source is a checkout) and the features enabled (`MIGRATIONPILOT_FEATURES`).
//!
//! Marks the tests whose server or tool this machine lacks (`cfg(missing_postgres)` …), so
//! `cargo test` lists them as ignored, with what they need, instead of passing them without
//! running. A test needs what `source .ci/services.sh start` provides and exports: it is
//! marked when its variable is unset. Under `CI=true` nothing is marked: there a test that
//! finds no server or tool fails.

/// The cfg each variable's absence sets.
const NEEDS: [(&str, &str); 10] = [
    ("missing_postgres", "MIGRATIONPILOT_TEST_POSTGRES_URL"),
    ("missing_promtool", "MIGRATIONPILOT_TEST_PROMTOOL"),
    ("missing_prometheus", "MIGRATIONPILOT_TEST_PROMETHEUS"),
    ("missing_alertmanager", "MIGRATIONPILOT_TEST_ALERTMANAGER"),
    ("missing_chromium", "MIGRATIONPILOT_TEST_CHROMIUM"),
    ("missing_aiosmtpd", "MIGRATIONPILOT_TEST_AIOSMTPD"),
    ("missing_schemathesis", "MIGRATIONPILOT_TEST_SCHEMATHESIS"),
    ("missing_zsh", "MIGRATIONPILOT_TEST_ZSH"),
    ("missing_fish", "MIGRATIONPILOT_TEST_FISH"),
    (
        "missing_check_jsonschema",
        "MIGRATIONPILOT_TEST_CHECK_JSONSCHEMA",
    ),
];

/// The features `--version` names, as Cargo.toml calls them.
const FEATURES: [&str; 3] = ["postgres", "mysql", "redis"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    version();
    let ci = std::env::var("CI").as_deref() == Ok("true");
    for (cfg, variable) in NEEDS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={variable}");
        if !ci && std::env::var_os(variable).is_none_or(|v| v.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

/// The commit and features for `--version`. The commit is read again when the checkout's
/// `HEAD` or its branch moves; outside a checkout (a packaged source) it is `unknown`.
fn version() {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]);
    if commit.is_some() {
        // Watched only where they exist: cargo takes a missing file for a changed one.
        let manifest =
            std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
        let head = git(&["rev-parse", "--symbolic-full-name", "HEAD"]);
        for path in ["HEAD".to_owned(), "packed-refs".to_owned()]
            .into_iter()
            .chain(head)
        {
            if let Some(file) = git(&["rev-parse", "--git-path", &path]) {
                let file = manifest.join(file);
                if file.is_file() {
                    println!("cargo::rerun-if-changed={}", file.display());
                }
            }
        }
    }
    let commit = commit.unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=MIGRATIONPILOT_COMMIT={commit}");
    let features: Vec<&str> = FEATURES
        .into_iter()
        .filter(|f| std::env::var_os(format!("CARGO_FEATURE_{}", f.to_uppercase())).is_some())
        .collect();
    let features = if features.is_empty() {
        "none (a lean build)".to_owned()
    } else {
        features.join(", ")
    };
    println!("cargo::rustc-env=MIGRATIONPILOT_FEATURES={features}");
}
