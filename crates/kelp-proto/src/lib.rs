//! gRPC messages.
