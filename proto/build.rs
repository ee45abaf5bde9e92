//! Compiles `protos/floe.proto` with protox (a protobuf compiler in Rust): building Floe
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=protos/floe.proto");
    let descriptors = protox::compile(["protos/floe.proto"], ["protos"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
