//! Kelp volume server.
