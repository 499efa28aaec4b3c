//! Replays every `specs/*.spec` scenario against the call machine's table.

use std::fs;
use std::path::PathBuf;

use parlo_tests::spec::replay;

fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../specs")
}

#[test]
fn every_spec_replays() {
    let mut files: Vec<PathBuf> = fs::read_dir(spec_dir())
        .expect("specs/ is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spec"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 12,
        "expected at least 12 specs, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = fs::read_to_string(file).expect("spec is readable");
        let shown = format!(
            "specs/{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        match replay(&text) {
            Ok(events) => eprintln!("{shown}: {events} events replayed"),
            Err(f) => failures.push(format!("{shown}:{}: {}", f.line, f.message)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
