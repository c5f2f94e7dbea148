//! The pipeline-file loader on arbitrary text, as YAML and as TOML: parsing, `${NAME}`
//! substitution and every semantic check of `build` must answer with errors, never a panic, a
//! hang or runaway memory.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use migrationpilot::file::{Format, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A variable whose value would break the file's syntax were it substituted as text.
    let lookup = |name: &str| (name == "SET").then(|| "v: {[\"' #*&".to_owned());
    for format in [Format::Yaml, Format::Toml] {
        let path = Path::new("/nonexistent/fuzz/pipeline.yaml");
        if let Ok(loaded) = parse(path, text.to_owned(), format, &lookup) {
            let _ = migrationpilot::build::build(
                &loaded.file,
                path,
                &loaded.text,
                &loaded.secrets,
                None,
                Some(1),
            );
        }
    }
});
