//! `servesim-calibrate`: the calibration command line (`servesim calibrate …` runs it). Everything
//! is in the library ([`servesim_calibrate::cli`]).

fn main() {
    let code = servesim_calibrate::cli::main_with_args(
        std::env::args_os().collect(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    std::process::exit(code);
}
