//! The load generator works against the real server: a short run of each mode exits 0,
//! with every answer checked and a throughput reported.

use std::process::Command;

use parlo_tests::server_harness::{Server, workspace_binary};

fn bench(server: &Server, mode: &str) -> String {
    let output = Command::new(workspace_binary("parlo-bench"))
        .args([
            "--server",
            &server.addr.to_string(),
            "--server-pid",
            &server.pid().to_string(),
            "--mode",
            mode,
            "--connections",
            "20",
            "--warmup",
            "0",
            "--duration",
            "1",
            "--json",
        ])
        .output()
        .expect("parlo-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "parlo-bench --mode {mode} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn number(report: &str, key: &str) -> f64 {
    let at = report
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {report}"));
    let rest = &report[at + key.len() + 3..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {report}"))
}

#[test]
fn lookup_and_churn_runs_succeed_against_the_real_server() {
    let server = Server::start(&[]);
    let lookups = bench(&server, "lookup");
    assert!(number(&lookups, "total") == 0.0, "errors: {lookups}");
    assert!(number(&lookups, "completed") > 0.0, "{lookups}");
    let churn = bench(&server, "churn");
    assert!(number(&churn, "total") == 0.0, "errors: {churn}");
    assert!(number(&churn, "completed") > 0.0, "{churn}");
}
