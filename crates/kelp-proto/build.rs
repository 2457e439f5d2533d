//! Compiles the .proto files with protox (pure Rust), so building Kelp
//! needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/master.proto", "proto/volume_server.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
