//! Traces: the canonical CSV reader (also Vidur's replay format), length files, synthetic
//! arrival processes and length distributions, importers of public datasets and production
//! traces (`import/`), and trace statistics. Rows stream; nothing here loads a whole trace into
//! memory except a lengths file (two integers per row).

pub mod csv_reader;
pub mod import;
pub mod stats;
pub mod synthetic;

pub use csv_reader::{TraceCsv, TraceSummary, scan_trace};
pub use synthetic::{
    ArrivalGen, ArrivalProcess, Arrivals, LengthDist, LengthPair, Lengths, Synthetic, read_lengths,
};
