//! ferroturn
