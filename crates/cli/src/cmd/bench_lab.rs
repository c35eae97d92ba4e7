//! `netsleuth bench lab`: the live-path speed claims (issue #3) — a 3-node / 6-pod lab up in
//! < 3 s, one node collected in < 200 ms, `diagnose --lab` end to end in < 1 s, `demo` in < 10 s.
//! Medians are printed as a table; the figures go to `docs/benchmarks.md`.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use collect::NetnsFilter;
use lab::{Lab, LabSpec};
use model::CniMode;

use super::bench::{median, ms};

/// Lab names used here; removed before and after.
const BENCH_LAB: &str = "nslbench";
const DEMO_LAB: &str = "nslbench-demo";

/// Takes the bench labs down however the bench ends.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Lab::down(BENCH_LAB);
        let _ = Lab::down(DEMO_LAB);
    }
}

fn lab_spec(cni: CniMode) -> LabSpec {
    LabSpec {
        cni,
        nodes: 3,
        pods_per_node: 2,
        ..LabSpec::new(BENCH_LAB)
    }
}

/// Runs this executable with `args`, timing it; it must exit with `expect`.
fn time_self(args: &[&str], expect: i32) -> anyhow::Result<Duration> {
    let exe = std::env::current_exe().context("locating the netsleuth executable")?;
    let start = Instant::now();
    let out = Command::new(&exe)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", exe.display()))?;
    let took = start.elapsed();
    if out.status.code() != Some(expect) {
        bail!(
            "`netsleuth {}` exited with {} (expected {expect}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(took)
}

pub fn run(runs: usize, cni: CniMode) -> anyhow::Result<()> {
    let _cleanup = Cleanup;
    let _ = Lab::down(BENCH_LAB);
    let _ = Lab::down(DEMO_LAB);

    let mut up = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        Lab::up(lab_spec(cni))?;
        up.push(start.elapsed());
        Lab::down(BENCH_LAB)?;
    }
    eprintln!("lab up: {} runs done", runs);

    Lab::up(lab_spec(cni))?;
    let inventory = super::collect::lab_inventory(BENCH_LAB)?;
    let one_node = NetnsFilter::Nodes(BTreeSet::from(["node-1".to_string()]));
    let mut collect_node = Vec::new();
    let mut namespaces = 0;
    for _ in 0..runs {
        let start = Instant::now();
        let snapshot = collect::collect_inventory(&inventory, &one_node, &mut |_, _| {})?;
        collect_node.push(start.elapsed());
        namespaces = snapshot.netns.len();
    }
    eprintln!("collect one node ({namespaces} namespaces): {runs} runs done");

    let diagnose_args = [
        "diagnose",
        "--lab",
        BENCH_LAB,
        "-s",
        "default/pod-1-1",
        "-d",
        "default/pod-2-1",
        "-p",
        "8080",
    ];
    let mut diagnose_lab = Vec::new();
    for _ in 0..runs {
        diagnose_lab.push(time_self(&diagnose_args, super::exit::OK as i32)?);
    }
    eprintln!("diagnose --lab: {runs} runs done");
    Lab::down(BENCH_LAB)?;

    let demo_runs = runs.min(3);
    let mut demo = Vec::new();
    for _ in 0..demo_runs {
        demo.push(time_self(
            &["demo", "--name", DEMO_LAB, "--cni", cni.as_str()],
            super::exit::OK as i32,
        )?);
    }

    println!("live path on a {cni} lab (median of {runs} runs; demo: {demo_runs}):");
    println!("| what | median | target |");
    println!("|---|---|---|");
    println!(
        "| lab up, 3 nodes / 6 pods | {:.0} ms | < 3000 ms |",
        ms(median(up))
    );
    println!(
        "| collect one node ({namespaces} namespaces) | {:.0} ms | < 200 ms |",
        ms(median(collect_node))
    );
    println!(
        "| `diagnose --lab` end to end (process) | {:.0} ms | < 1000 ms |",
        ms(median(diagnose_lab))
    );
    println!(
        "| `demo` end to end (process) | {:.0} ms | < 10000 ms |",
        ms(median(demo))
    );
    Ok(())
}
