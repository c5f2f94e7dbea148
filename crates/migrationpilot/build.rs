//! Marks the tests whose server or tool this machine lacks (`cfg(missing_postgres)` …), so
//! `cargo test` lists them as ignored, with what they need, instead of passing them without
//! running. A test needs what `source .ci/services.sh start` provides and exports: it is
//! marked when its variable is unset. Under `CI=true` nothing is marked: there a test that
//! finds no server or tool fails.

/// The cfg each variable's absence sets.
const NEEDS: [(&str, &str); 7] = [
    ("missing_postgres", "MIGRATIONPILOT_TEST_POSTGRES_URL"),
    ("missing_promtool", "MIGRATIONPILOT_TEST_PROMTOOL"),
    ("missing_prometheus", "MIGRATIONPILOT_TEST_PROMETHEUS"),
    ("missing_alertmanager", "MIGRATIONPILOT_TEST_ALERTMANAGER"),
    ("missing_chromium", "MIGRATIONPILOT_TEST_CHROMIUM"),
    ("missing_aiosmtpd", "MIGRATIONPILOT_TEST_AIOSMTPD"),
    ("missing_schemathesis", "MIGRATIONPILOT_TEST_SCHEMATHESIS"),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    let ci = std::env::var("CI").as_deref() == Ok("true");
    for (cfg, variable) in NEEDS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={variable}");
        if !ci && std::env::var_os(variable).is_none_or(|v| v.is_empty()) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
