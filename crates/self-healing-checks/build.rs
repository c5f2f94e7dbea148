//! Marks the tests whose server this machine lacks (`cfg(missing_postgres)` …), so `cargo
//! test` lists them as ignored, with what they need, instead of passing them without running.
//! Under `CI=true` nothing is marked: there a test that finds no server fails. `source
//! .ci/services.sh start` starts all of them.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CI");
    let ci = std::env::var("CI").as_deref() == Ok("true");
    for server in ["postgres", "mysql", "redis"] {
        let variable = format!("MIGRATIONPILOT_TEST_{}_URL", server.to_uppercase());
        println!("cargo::rustc-check-cfg=cfg(missing_{server})");
        println!("cargo::rerun-if-env-changed={variable}");
        if !ci && std::env::var_os(&variable).is_none_or(|v| v.is_empty()) {
            println!("cargo::rustc-cfg=missing_{server}");
        }
    }
}
