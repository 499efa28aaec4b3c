//! Replays every `specs/messages/*.spec` scenario against the message machine (and the
//! call machine beside it where a spec says `call`), and checks that together they reach
//! every row of the message table.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use parlo_fsm::messages::TABLE;
use parlo_fsm::messages::table::Outcome;
use parlo_tests::message_spec::{Replay, replay};

fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../specs/messages")
}

/// Replays every spec; panics listing every failure.
fn replay_all() -> Vec<(String, Replay)> {
    let mut files: Vec<PathBuf> = fs::read_dir(spec_dir())
        .expect("specs/messages/ is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spec"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "expected at least 10 message specs, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    let mut replays = Vec::new();
    for file in files {
        let shown = format!(
            "specs/messages/{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        let text = fs::read_to_string(&file).expect("spec is readable");
        match replay(&text) {
            Ok(replay) => replays.push((shown, replay)),
            Err(f) => failures.push(format!("{shown}:{}: {}", f.line, f.message)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    replays
}

#[test]
fn every_message_spec_replays() {
    for (shown, replay) in replay_all() {
        eprintln!("{shown}: {} events replayed", replay.events);
    }
}

/// Each row of the message table (not the `ignore` entries) is what some spec shows
/// happening.
#[test]
fn every_message_table_row_is_reached_by_a_spec() {
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
        "{} rows of the message table are reached by no spec (state × event [guard]):\n{}",
        missing.len(),
        missing.join("\n")
    );
}
