//! `servesim` binary: parse, run, exit. Everything else is in the library.

fn main() {
    let code = servesim::cli::main_with_args(
        std::env::args_os().collect(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr(),
    );
    std::process::exit(code);
}
