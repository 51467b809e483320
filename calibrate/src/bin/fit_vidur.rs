//! `fit-vidur`: fit the `analytic` cost model to Vidur's operator profiles and write
//! `sim/catalogue/analytic_fit.toml` and `calibrate/data/vidur/FIT_REPORT.md`.
//!
//! ```text
//! cargo run --release -p servesim-calibrate --bin fit-vidur -- [--data-dir DIR]
//!     [--out-toml PATH] [--out-report PATH] [--date YYYY-MM-DD] [--check]
//! ```
//! `--check` writes nothing and exits 1 if the files on disk differ from what the fit produces
//! (with the date taken from the existing TOML unless `--date` is given).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use servesim_calibrate::vidur_fit::{self, render};

struct Args {
    data_dir: PathBuf,
    out_toml: PathBuf,
    out_report: PathBuf,
    date: Option<String>,
    check: bool,
}

const USAGE: &str = "usage: fit-vidur [--data-dir DIR] [--out-toml PATH] [--out-report PATH] \
                     [--date YYYY-MM-DD] [--check]";

fn parse_args() -> Result<Option<Args>> {
    let mut a = Args {
        data_dir: vidur_fit::default_data_dir(),
        out_toml: vidur_fit::default_fit_toml_path(),
        out_report: vidur_fit::default_report_path(),
        date: None,
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--data-dir" => a.data_dir = value()?.into(),
            "--out-toml" => a.out_toml = value()?.into(),
            "--out-report" => a.out_report = value()?.into(),
            "--date" => {
                let d = value()?;
                let ok = d.len() == 10
                    && d.char_indices().all(|(i, c)| {
                        if i == 4 || i == 7 {
                            c == '-'
                        } else {
                            c.is_ascii_digit()
                        }
                    });
                if !ok {
                    bail!("--date must be YYYY-MM-DD, got `{d}`");
                }
                a.date = Some(d);
            }
            "--check" => a.check = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument `{other}`\n{USAGE}"),
        }
    }
    Ok(Some(a))
}

fn run() -> Result<bool> {
    let Some(a) = parse_args()? else {
        return Ok(true);
    };
    let fits = vidur_fit::fit_all(&a.data_dir)?;
    for f in &fits {
        println!("{} ({}): {:?}", f.device, f.catalogue_gpu, f.params);
        for r in &f.errors {
            println!(
                "  {:<12} tp {:>3}  n {:>5}  mean {:>6.1}%  max {:>7.1}%",
                r.group.key(),
                r.tp.map_or("all".to_string(), |t| t.to_string()),
                r.stats.n,
                100.0 * r.stats.mean,
                100.0 * r.stats.max
            );
        }
    }
    let date = match (&a.date, a.check) {
        (Some(d), _) => d.clone(),
        (None, true) => {
            let text = std::fs::read_to_string(&a.out_toml)
                .with_context(|| format!("cannot read {}", a.out_toml.display()))?;
            vidur_fit::fit_date_of(&text)
                .with_context(|| format!("{}: no fit_date", a.out_toml.display()))?
        }
        (None, false) => render::today_utc(),
    };
    let toml_text = render::render_fit_toml(&fits, &date);
    let report = render::render_report(&fits, &date);
    if a.check {
        let mut same = true;
        for (path, want) in [(&a.out_toml, &toml_text), (&a.out_report, &report)] {
            let have = std::fs::read_to_string(path).unwrap_or_default();
            if &have != want {
                eprintln!("{} differs from the fit's output", path.display());
                same = false;
            }
        }
        return Ok(same);
    }
    for (path, text) in [(&a.out_toml, &toml_text), (&a.out_report, &report)] {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(true)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!(
                "fit-vidur: {}",
                servesim::error::one_line(&format!("{e:#}"))
            );
            ExitCode::from(2)
        }
    }
}
