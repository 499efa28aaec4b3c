//! The committed pictures of the call machine match its table.
//!
//! When a change to the table is intended, regenerate them with
//! `PARLO_BLESS=1 cargo test -p parlo-tests --test picture` and commit the diff.

use std::fs;
use std::path::PathBuf;

use parlo_tests::picture::{matrix, mermaid, message_matrix};

const BEGIN: &str = "<!-- state-diagram: generated from the table, do not edit -->\n";
const END: &str = "<!-- state-diagram end -->";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bless() -> bool {
    std::env::var_os("PARLO_BLESS").is_some()
}

#[test]
fn transition_matrix_is_current() {
    let path = root().join("specs/transitions.txt");
    let want = matrix();
    if bless() {
        fs::write(&path, &want).expect("specs/transitions.txt is writable");
    }
    let have = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "specs/transitions.txt is stale: the table changed. Review the change, then run \
         `PARLO_BLESS=1 cargo test -p parlo-tests --test picture` and commit the result."
    );
}

#[test]
fn message_transition_matrix_is_current() {
    let path = root().join("specs/messages/transitions.txt");
    let want = message_matrix();
    if bless() {
        fs::write(&path, &want).expect("specs/messages/transitions.txt is writable");
    }
    let have = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "specs/messages/transitions.txt is stale: the message table changed. Review the \
         change, then run `PARLO_BLESS=1 cargo test -p parlo-tests --test picture` and \
         commit the result."
    );
}

#[test]
fn readme_state_diagram_is_current() {
    let path = root().join("README.md");
    let readme = fs::read_to_string(&path).expect("README.md is readable");
    let (Some(start), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        panic!("README.md lacks the state diagram markers `{BEGIN}` … `{END}`");
    };
    let start = start + BEGIN.len();
    let want = mermaid();
    if bless() {
        let updated = format!("{}{want}{}", &readme[..start], &readme[end..]);
        fs::write(&path, updated).expect("README.md is writable");
        return;
    }
    assert!(
        readme[start..end] == want,
        "the state diagram in README.md is stale: run \
         `PARLO_BLESS=1 cargo test -p parlo-tests --test picture` and commit the result."
    );
}
