//! Build script: with feature `export`, compiles `proto/onnx.proto` into Rust
//! types (prost) using the vendored `protoc`, so no system protobuf compiler is
//! needed. Without the feature it does nothing.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "export")]
    compile_onnx_proto()?;
    Ok(())
}

/// Writes `$OUT_DIR/onnx.rs` (package `onnx`), included by `src/onnx/proto.rs`.
#[cfg(feature = "export")]
fn compile_onnx_proto() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    println!("cargo:rerun-if-changed=build.rs");
    let protoc =
        protoc_bin_vendored::protoc_bin_path().map_err(|e| format!("no vendored protoc for this platform: {e}"))?;
    prost_build::Config::new()
        .protoc_executable(protoc)
        .compile_protos(&["proto/onnx.proto"], &["proto"])
        .map_err(|e| format!("compiling proto/onnx.proto: {e}"))?;
    Ok(())
}
