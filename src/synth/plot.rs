//! Plots. (stub)
