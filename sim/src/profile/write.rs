//! Writing a profile: the text of `measurements.csv`, the measured grid of every operator that
//! `meta.toml` records, and the atomic write of the three files.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{
    FIT_FILE, GridInfo, MEASUREMENTS_FILE, MEASUREMENTS_HEADER, META_FILE, Measurement, Op,
    Profile, SCHEMA_VERSION,
};
use crate::error::{Result, SimError};

/// `measurements.csv` text.
pub fn measurements_csv(rows: &[Measurement]) -> String {
    let mut s = String::from(MEASUREMENTS_HEADER);
    s.push('\n');
    let opt = |v: Option<f64>| v.map(|v| format!("{v:e}")).unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            s,
            "{},{},{},{:e},{},{},{},{}",
            r.op.name(),
            r.x,
            r.y,
            r.time_s,
            opt(r.min_s),
            opt(r.max_s),
            r.repeats.map(|n| n.to_string()).unwrap_or_default(),
            r.source.replace([',', '\n', '"'], ";"),
        );
    }
    s
}

/// The measured domain of every operator present in `rows`.
pub fn grids(rows: &[Measurement]) -> BTreeMap<String, GridInfo> {
    let mut by_op: BTreeMap<Op, Vec<&Measurement>> = BTreeMap::new();
    for r in rows {
        by_op.entry(r.op).or_default().push(r);
    }
    by_op
        .into_iter()
        .map(|(op, rs)| {
            let distinct = |f: fn(&Measurement) -> u64| {
                let mut v: Vec<u64> = rs.iter().map(|r| f(r)).collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let xs = distinct(|r| r.x);
            let ys = distinct(|r| r.y);
            (
                op.name().to_string(),
                GridInfo {
                    rows: rs.len() as u64,
                    x_min: xs[0],
                    x_max: *xs.last().expect("non-empty"),
                    x_values: xs.len() as u64,
                    y_min: ys[0],
                    y_max: *ys.last().expect("non-empty"),
                    y_values: ys.len() as u64,
                },
            )
        })
        .collect()
}

impl Profile {
    /// The three files' text (meta's grid recomputed from the rows).
    pub fn render(&self) -> Result<[(&'static str, String); 3]> {
        let mut meta = self.meta.clone();
        meta.schema_version = SCHEMA_VERSION;
        meta.grid = grids(&self.rows);
        let mut fit = self.fit.clone();
        fit.schema_version = SCHEMA_VERSION;
        let ser = |e: toml::ser::Error| SimError::config(format!("cannot serialise profile: {e}"));
        Ok([
            (
                META_FILE,
                format!(
                    "# servesim calibration profile: metadata (schema {SCHEMA_VERSION}). Written by {}.\n{}",
                    meta.tool,
                    toml::to_string(&meta).map_err(ser)?
                ),
            ),
            (
                FIT_FILE,
                format!(
                    "# servesim calibration profile: fitted per-operator models (schema {SCHEMA_VERSION}); forms in sim/src/profile/mod.rs.\n{}",
                    toml::to_string(&fit).map_err(ser)?
                ),
            ),
            (MEASUREMENTS_FILE, measurements_csv(&self.rows)),
        ])
    }

    /// Write the profile into `dir` atomically (staged in a sibling directory, then renamed). An
    /// existing directory is replaced when servesim wrote it (or it is empty), or with `force`;
    /// never one holding `replace.inputs`.
    pub fn write(&self, dir: &Path, replace: &crate::staging::Replace) -> Result<PathBuf> {
        let files = self.render()?;
        let staged = crate::staging::StagedDir::new(dir, replace)?;
        for (name, text) in &files {
            staged.write(name, text.as_bytes())?;
        }
        staged.commit()
    }
}
