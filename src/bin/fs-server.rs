//! The feature store's HTTP server (UI + JSON API + streaming worker).
use clap::Parser;

/// Serve the feature store's UI and JSON API.
#[derive(Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _ = Args::parse();
    eprintln!("fs-server: not built yet");
    std::process::exit(2);
}
