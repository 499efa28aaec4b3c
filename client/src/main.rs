//! parlo-client: the phone daemon (not built yet).
fn main() {
    eprintln!("parlo-client: the phone daemon is not built yet");
    std::process::exit(1);
}
