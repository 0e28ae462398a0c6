//! The batch loader: materializes feature rows into Redis.
use clap::Parser;

/// Load batch features into the feature store.
#[derive(Parser)]
#[command(version, about)]
struct Args {}

fn main() {
    let _ = Args::parse();
    eprintln!("fs-loader: not built yet");
    std::process::exit(2);
}
