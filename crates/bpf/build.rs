//! Compiles every probe's `src/<probe>/<probe>.bpf.c` with clang into `$OUT_DIR/<probe>.bpf.o`,
//! against a `vmlinux.h` dumped from the build machine's kernel BTF by bpftool. The objects keep
//! their BTF (`-g`) so aya can relocate field accesses (CO-RE) against the running kernel.
//!
//! Environment: `NETSLEUTH_VMLINUX_BTF` overrides the BTF file (default
//! `/sys/kernel/btf/vmlinux`); `CLANG` and `BPFTOOL` override the tools.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
            .join("src");
    println!("cargo:rerun-if-env-changed=NETSLEUTH_VMLINUX_BTF");
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-env-changed=BPFTOOL");
    // The whole tree: a new probe folder must trigger a rebuild too.
    println!("cargo:rerun-if-changed=src");

    let btf =
        env::var("NETSLEUTH_VMLINUX_BTF").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());
    let vmlinux_h = out_dir.join("vmlinux.h");
    dump_vmlinux_h(Path::new(&btf), &vmlinux_h);

    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => fail(&format!(
            "no eBPF register layout known for target arch {other}"
        )),
        Err(_) => fail("CARGO_CFG_TARGET_ARCH is not set"),
    };
    let mut probes: Vec<String> = fs::read_dir(&src)
        .unwrap_or_else(|e| fail(&format!("reading {}: {e}", src.display())))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| src.join(name).join(format!("{name}.bpf.c")).is_file())
        .collect();
    probes.sort();
    for probe in probes {
        let source = src.join(&probe).join(format!("{probe}.bpf.c"));
        compile(
            &source,
            &out_dir.join(format!("{probe}.bpf.o")),
            &out_dir,
            &src,
            arch,
        );
    }
}

fn dump_vmlinux_h(btf: &Path, vmlinux_h: &Path) {
    if !btf.exists() {
        fail(&format!(
            "kernel BTF {} does not exist: the probes are compiled against the kernel's types; \
             build on a kernel with CONFIG_DEBUG_INFO_BTF=y or set NETSLEUTH_VMLINUX_BTF to a vmlinux with BTF",
            btf.display()
        ));
    }
    let bpftool = env::var("BPFTOOL").unwrap_or_else(|_| "bpftool".into());
    let output = Command::new(&bpftool)
        .args(["btf", "dump", "file"])
        .arg(btf)
        .args(["format", "c"])
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| {
            fail(&format!(
                "running {bpftool} (install it with scripts/install-deps.sh): {e}"
            ))
        });
    if !output.status.success() {
        fail(&format!(
            "{bpftool} btf dump file {} format c failed: {}",
            btf.display(),
            output.status
        ));
    }
    // Rewrite only on change so clang outputs stay fresh but cargo does not loop.
    if fs::read(vmlinux_h).ok().as_deref() != Some(&output.stdout[..]) {
        fs::write(vmlinux_h, &output.stdout)
            .unwrap_or_else(|e| fail(&format!("writing {}: {e}", vmlinux_h.display())));
    }
}

fn compile(source: &Path, object: &Path, include_generated: &Path, include_src: &Path, arch: &str) {
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .arg("-I")
        .arg(include_generated)
        .arg("-I")
        .arg(include_src)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .status()
        .unwrap_or_else(|e| {
            fail(&format!(
                "running {clang} (install it with scripts/install-deps.sh): {e}"
            ))
        });
    if !status.success() {
        fail(&format!("{clang} failed on {}: {status}", source.display()));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("bpf build: {message}");
}
