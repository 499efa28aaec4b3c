//! Replays every `specs/*.spec` scenario against the call machine's table, and checks
//! that together they reach every row of it.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use parlo_fsm::TABLE;
use parlo_fsm::table::Outcome;
use parlo_tests::spec::{Replay, replay};

fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../specs")
}

/// Every spec, by the name it is shown as, with its text.
fn specs() -> Vec<(String, String)> {
    let mut files: Vec<PathBuf> = fs::read_dir(spec_dir())
        .expect("specs/ is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spec"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let shown = format!(
                "specs/{}",
                file.file_name().unwrap_or_default().to_string_lossy()
            );
            (shown, fs::read_to_string(file).expect("spec is readable"))
        })
        .collect()
}

/// Replays every spec; panics listing every failure.
fn replay_all() -> Vec<(String, Replay)> {
    let specs = specs();
    assert!(
        specs.len() >= 12,
        "expected at least 12 specs, found {}",
        specs.len()
    );
    let mut failures = Vec::new();
    let mut replays = Vec::new();
    for (shown, text) in specs {
        match replay(&text) {
            Ok(replay) => replays.push((shown, replay)),
            Err(f) => failures.push(format!("{shown}:{}: {}", f.line, f.message)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    replays
}

#[test]
fn every_spec_replays() {
    for (shown, replay) in replay_all() {
        eprintln!("{shown}: {} events replayed", replay.events);
    }
}

/// Each row of the table (not the `ignore` entries, whose only effect is to do nothing)
/// is what some spec shows happening.
#[test]
fn every_table_row_is_reached_by_a_spec() {
    let reached: BTreeSet<usize> = replay_all()
        .into_iter()
        .flat_map(|(_, replay)| replay.reached)
        .collect();
    let missing: Vec<String> = TABLE
        .iter()
        .enumerate()
        .filter(|(i, e)| matches!(e.outcome, Outcome::Row { .. }) && !reached.contains(i))
        .map(|(_, e)| {
            let guard = match e.guard.name() {
                "" => String::new(),
                g => format!(" [{g}]"),
            };
            format!("  {:?} × {}{guard}", e.state, e.event.name())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{} rows of the table are reached by no spec (state × event [guard]):\n{}",
        missing.len(),
        missing.join("\n")
    );
}
