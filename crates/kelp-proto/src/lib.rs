//! The SeaweedFS-compatible gRPC subset: `master_pb.Seaweed` and the part of
//! `volume_server_pb.VolumeServer` a master calls. Field numbers match
//! SeaweedFS (see `proto/`), so Kelp and real `weed` processes can be mixed.

#![allow(clippy::all, clippy::pedantic)]

pub mod master_pb {
    tonic::include_proto!("master_pb");
}

pub mod volume_server_pb {
    tonic::include_proto!("volume_server_pb");
}

include!(concat!(env!("OUT_DIR"), "/methods.rs"));

/// gRPC port that SeaweedFS pairs with an HTTP port when none is given.
pub fn default_grpc_port(http_port: u16) -> u16 {
    http_port.wrapping_add(10_000)
}
