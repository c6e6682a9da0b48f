//! ferroturn

pub mod turn;
