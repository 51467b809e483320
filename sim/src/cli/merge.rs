//! `servesim merge`: join the shard directories of `servesim sweep --shard I/N` into one sweep
//! directory (see [`crate::shard`]).

use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Shard directories written by `servesim sweep --shard I/N` (all N of them, any order).
    #[arg(required = true, value_name = "SHARD_DIR")]
    pub shards: Vec<PathBuf>,
    /// Output sweep directory (sweep.csv, runs/, timing.json, plots/), written atomically. An
    /// existing one is replaced only if servesim wrote it (or it is empty), unless --force; a
    /// shard directory is never replaced.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace --out even when it exists and was not written by servesim.
    #[arg(long)]
    pub force: bool,
    /// Do not draw plots.
    #[arg(long)]
    pub no_plots: bool,
}

pub fn merge_cmd(a: MergeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    // Ctrl-C or SIGTERM stops the copying between runs and removes the staging directory.
    let _ctrl_c = crate::interrupt::CtrlC::install();
    let r = crate::shard::merge(&a.shards, &a.out, !a.no_plots, a.force)?;
    writeln!(
        out,
        "merged {} shards: {} runs ({} failed); sweep.csv in {}",
        r.shards,
        r.runs,
        r.failed,
        r.dir.display()
    )?;
    Ok(())
}
