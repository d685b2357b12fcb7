//! Prints the Rust that `include_spec!` generates for a spec file, formatted.
//! Usage: cargo run -p xenmig-codegen --example render -- spec/libxc.yaml

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: render SPEC.yaml");
        std::process::exit(2);
    };
    match xenmig_codegen::load(std::path::Path::new(&path)) {
        Ok(spec) => match xenmig_codegen::rust_source(&spec, None) {
            Ok(src) => print!("{src}"),
            Err(e) => {
                eprintln!("generated code does not parse: {e}");
                std::process::exit(1);
            }
        },
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
