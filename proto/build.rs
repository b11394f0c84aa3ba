//! Compiles `openteller/**/*.proto` with protox (pure Rust), so no system `protoc` is needed,
//! and generates proto3-JSON serde impls with pbjson (the JSON form the SJSL bridge and the
//! testers' panel speak).

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "openteller/device/v1/device.proto",
        "openteller/device/v1/simulator.proto",
    ];
    println!("cargo:rerun-if-changed=openteller");
    let descriptors = protox::compile(files, ["."])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("descriptors.bin");
    std::fs::write(&descriptor_path, descriptors.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptor_path)?)?
        .build(&[".openteller"])?;
    Ok(())
}
