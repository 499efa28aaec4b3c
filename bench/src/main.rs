//! parlo-bench: load generator for the directory server (not built yet).
fn main() {
    eprintln!("parlo-bench: not built yet");
    std::process::exit(1);
}
