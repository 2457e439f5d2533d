//! Kelp master.
