//! Compile the BPF program with clang (CO-RE) and generate its skeleton.
//! Without clang, the crate builds a stub whose `watch` explains why it
//! cannot run (scripts/test.sh installs clang, libelf and zlib).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pickguard_bpf)");
    println!("cargo::rerun-if-changed=src/bpf/watch.bpf.c");
    println!("cargo::rerun-if-changed=src/bpf/vmlinux_min.h");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    #[cfg(feature = "bpf")]
    build_bpf();
}

#[cfg(feature = "bpf")]
fn build_bpf() {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    if std::process::Command::new(&clang)
        .arg("--version")
        .output()
        .is_err()
    {
        println!(
            "cargo::warning=clang not found: pickguard watch is built without its eBPF program"
        );
        return;
    }
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"))
        .join("watch.skel.rs");
    libbpf_cargo::SkeletonBuilder::new()
        .source("src/bpf/watch.bpf.c")
        .clang(&clang)
        .clang_args(["-I", "src/bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86"])
        .build_and_generate(&out)
        .expect("compiling src/bpf/watch.bpf.c");
    println!("cargo::rustc-cfg=pickguard_bpf");
}
