//! The batch loader: materializes feature rows into Redis (see `loader`).

fn main() -> std::process::ExitCode {
    feature_store::loader::main()
}
