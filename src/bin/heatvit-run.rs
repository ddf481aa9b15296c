fn main() -> std::process::ExitCode {
    heatvit::cli::main()
}
