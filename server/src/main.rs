//! parlo-server: the directory daemon (not built yet).
fn main() {
    eprintln!("parlo-server: the directory daemon is not built yet");
    std::process::exit(1);
}
