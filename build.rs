//! Build script: sets the soname of the C library and, with the `capi`
//! feature (the C library's build: `make`, `make header`, `make test`),
//! generates the C header with cbindgen and compiles a C file of
//! `_Static_assert`s against that header, so a header that drifts from the
//! legacy layout fails the build itself.
//!
//! Without `capi` (a Rust crate depending on this one) nothing is generated
//! and no C compiler is run: cbindgen and cc are not even built.

use std::env;

fn main() {
    let major = env::var("CARGO_PKG_VERSION_MAJOR").expect("set by cargo");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libring_buffer.so.{major}");
    println!("cargo:rerun-if-changed=build.rs");

    #[cfg(feature = "capi")]
    capi::header_and_layout_check();
}

#[cfg(feature = "capi")]
mod capi {
    use std::env;
    use std::path::PathBuf;

    pub fn header_and_layout_check() {
        let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
        let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
        let config =
            cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
        let header = out_dir.join("ring_buffer.h");
        cbindgen::Builder::new()
            .with_crate(&crate_dir)
            .with_config(config)
            .generate()
            .expect("cbindgen could not generate the header")
            .write_to_file(&header);

        // A build may ask for a copy outside OUT_DIR (the Makefile reads the
        // one in OUT_DIR instead).
        println!("cargo:rerun-if-env-changed=RING_BUFFER_HEADER_OUT");
        if let Ok(copy) = env::var("RING_BUFFER_HEADER_OUT") {
            std::fs::copy(&header, copy).expect("copying the generated header");
        }

        cc::Build::new()
            .file(crate_dir.join("ffi-tests/layout_static_check.c"))
            .include(&out_dir)
            .warnings_into_errors(true)
            .cargo_metadata(false)
            .compile_intermediates();

        println!("cargo:rerun-if-changed=src");
        println!("cargo:rerun-if-changed=cbindgen.toml");
        println!("cargo:rerun-if-changed=ffi-tests/layout_static_check.c");
    }
}
