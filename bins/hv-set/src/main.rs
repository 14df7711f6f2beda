fn main() -> std::process::ExitCode {
    hv_common::cli::main(hv_set::run)
}
