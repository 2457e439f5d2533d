//! Compiles the .proto files with protox (pure Rust), so building Kelp
//! needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/master.proto", "proto/volume_server.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // Every method's path, so the security tests can call each one (a
    // method added to a .proto is walked without anyone listing it).
    let mut methods = String::from(
        "/// `/package.Service/Method` of every RPC in `proto/`.\npub const METHODS: &[&str] = &[\n",
    );
    for file in &descriptors.file {
        for service in &file.service {
            for method in &service.method {
                methods.push_str(&format!(
                    "    \"/{}.{}/{}\",\n",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    methods.push_str("];\n");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("methods.rs"), methods)?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
