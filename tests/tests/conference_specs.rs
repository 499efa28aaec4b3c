//! Replays every `specs/conference/*.spec` scenario against the conference layer.

use std::fs;
use std::path::PathBuf;

use parlo_tests::conference_spec::replay;

fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../specs/conference")
}

#[test]
fn every_conference_spec_replays() {
    let mut files: Vec<PathBuf> = fs::read_dir(spec_dir())
        .expect("specs/conference/ is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "spec"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 7,
        "expected at least 7 conference specs, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    for file in files {
        let shown = format!(
            "specs/conference/{}",
            file.file_name().unwrap_or_default().to_string_lossy()
        );
        let text = fs::read_to_string(&file).expect("spec is readable");
        match replay(&text) {
            Ok(replay) => eprintln!(
                "{shown}: {} events, {} actions",
                replay.events, replay.actions
            ),
            Err(f) => failures.push(format!("{shown}:{}: {}", f.line, f.message)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A spec that says the wrong thing fails: the replayer checks what it reads.
#[test]
fn a_wrong_spec_fails() {
    let wrong = "me carol\nconf 00000000000000c0 alice bob\n  dial bob conf=00000000000000c0\n";
    let failure = replay(wrong).expect_err("the first dial is alice's");
    assert_eq!(failure.line, 3, "{}", failure.message);
    let silent = "me carol\nstart eve\n  busy eve\n";
    assert!(
        replay(silent).is_err(),
        "an idle phone leaves an ordinary call alone"
    );
}

/// `CONFERENCE_SPEC_RECORD=path` prints that spec as the layer plays it now (drafting).
#[test]
fn record_on_request() {
    if let Ok(path) = std::env::var("CONFERENCE_SPEC_RECORD") {
        let text = fs::read_to_string(&path).expect("spec is readable");
        match parlo_tests::conference_spec::record(&text) {
            Ok(out) => println!("{out}"),
            Err(f) => panic!("{path}:{}: {}", f.line, f.message),
        }
    }
}
