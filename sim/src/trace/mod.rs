//! Traces: the canonical CSV reader (also Vidur's replay format), length files, and synthetic
//! arrival processes. Rows stream; nothing here loads a whole trace into memory except a lengths
//! file (two integers per row).

pub mod csv_reader;
pub mod synthetic;

pub use csv_reader::{TraceCsv, TraceSummary, scan_trace};
pub use synthetic::{ArrivalProcess, LengthPair, Synthetic, read_lengths};
