//! SeaweedFS-compatible volume files.
