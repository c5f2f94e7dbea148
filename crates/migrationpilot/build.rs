//! Marks the tests whose server or tool this machine lacks (`cfg(missing_postgres)` …), so
//! `cargo test` lists them as ignored, with what they need, instead of passing them without
//! running. Under `CI=true` nothing is marked: there a test that finds no server fails.
//! `source .ci/services.sh start` provides all of them.

/// The cfg, the variable `.ci/services.sh` sets, and the program found on `PATH` otherwise.
const NEEDS: [(&str, &str, Option<&str>); 8] = [
    ("missing_postgres", "MIGRATIONPILOT_TEST_POSTGRES_URL", None),
    (
        "missing_promtool",
        "MIGRATIONPILOT_TEST_PROMTOOL",
        Some("promtool"),
    ),
    (
        "missing_prometheus",
        "MIGRATIONPILOT_TEST_PROMETHEUS",
        Some("prometheus"),
    ),
    (
        "missing_alertmanager",
        "MIGRATIONPILOT_TEST_ALERTMANAGER",
        Some("prometheus-alertmanager"),
    ),
    (
        "missing_chromium",
        "MIGRATIONPILOT_TEST_CHROMIUM",
        Some("chromium"),
    ),
    ("missing_aiosmtpd", "MIGRATIONPILOT_TEST_AIOSMTPD", None),
    (
        "missing_script",
        "MIGRATIONPILOT_TEST_SCRIPT",
        Some("script"),
    ),
    (
        "missing_schemathesis",
        "MIGRATIONPILOT_TEST_SCHEMATHESIS",
        Some("schemathesis"),
    ),
];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=PATH");
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = |program: &str| std::env::split_paths(&path).any(|d| d.join(program).is_file());
    for (cfg, variable, program) in NEEDS {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        println!("cargo::rerun-if-env-changed={variable}");
        let given = std::env::var_os(variable).is_some_and(|v| !v.is_empty());
        if !ci && !given && !program.is_some_and(on_path) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}
