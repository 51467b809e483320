//! Value parsers of the calibration flags: each names what it expects, so a bad value is one
//! clap error line naming the flag (exit 2).

/// `--date`: a real calendar date written `YYYY-MM-DD` (it goes into meta.toml `created`).
pub fn date(s: &str) -> std::result::Result<String, String> {
    if servesim::profile::validate::is_date(s) {
        Ok(s.to_string())
    } else {
        Err("expected a date written YYYY-MM-DD, e.g. 2026-01-31".into())
    }
}

/// `plan --device`: `cpu`, or the GPU plan as `cuda`, `gpu` or a device ordinal.
pub fn plan_device(s: &str) -> std::result::Result<String, String> {
    let gpu = ["cuda", "gpu"].iter().any(|g| s.eq_ignore_ascii_case(g));
    if crate::cpu_run::is_cpu(s) || gpu || s.parse::<usize>().is_ok() {
        Ok(s.to_string())
    } else {
        Err("expected `cpu`, or `cuda`, `gpu` or a CUDA device ordinal for the GPU plan".into())
    }
}

/// `--threads`: 0 (every core) to 1024.
pub fn threads(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n <= 1024 => Ok(n),
        _ => Err("expected a whole number from 0 (every core) to 1024".into()),
    }
}
