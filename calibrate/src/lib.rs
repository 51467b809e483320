//! servesim-calibrate: fitting servesim's cost models to measured data.

pub mod vidur_fit;
