//! A clone storm: many clients clone one repository at once (CI jobs, a release
//! announcement). Measured as the CPU the serving side spends — the server's process groups
//! with every process they started (git children are reaped by their parents, so their time
//! shows in the parents' `cutime`/`cstime`) — for grasp-server, for grasp-proxy with its
//! nginx + fcgiwrap + git http-backend, and for nginx + git http-backend alone, in one run.
//! Each storm runs twice: cold (the pack cache has never seen the request) and warm.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use grasp_tests::sync::metric_sum;
use grasp_tests::upstream::NginxGit;

use crate::gitbench::{host_corpus, run_git};
use crate::procs::{grasp_proxy, grasp_server};
use crate::report::{Report, Row};
use crate::stats::mib;

/// Clock ticks per second of `/proc/<pid>/stat` times.
fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds used so far by every process in `groups`, with the children they reaped.
fn group_cpu(groups: &[u32]) -> f64 {
    let mut ticks = 0u64;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // Fields after the command name (which may hold spaces) start at the state.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let fields: Vec<&str> = after.split(' ').collect();
        // state(0) ppid(1) pgrp(2) ... utime(11) stime(12) cutime(13) cstime(14)
        let Some(pgrp) = fields.get(2).and_then(|f| f.parse::<u32>().ok()) else { continue };
        if groups.contains(&pgrp) {
            ticks += fields[11..15].iter().filter_map(|f| f.parse::<u64>().ok()).sum::<u64>();
        }
    }
    ticks as f64 / ticks_per_second()
}

/// `clients` concurrent bare clones of `url`; returns (wall time, server CPU seconds).
fn storm_once(url: &str, clients: usize, groups: &[u32]) -> anyhow::Result<(Duration, f64)> {
    let before = group_cpu(groups);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let url = url.to_owned();
            std::thread::spawn(move || -> anyhow::Result<()> {
                let dir = tempfile::tempdir()?;
                run_git(dir.path(), &["clone", "-q", "--bare", &url, "c.git"])?;
                Ok(())
            })
        })
        .collect();
    for handle in handles {
        handle.join().map_err(|_| anyhow::anyhow!("a clone thread panicked"))??;
    }
    let wall = started.elapsed();
    // Let the servers reap what they started (the last git processes end with the clones).
    std::thread::sleep(Duration::from_millis(300));
    Ok((wall, group_cpu(groups) - before))
}

/// The storm against grasp-server, grasp-proxy + its upstream and nginx alone.
pub async fn storm(
    report: &mut Report,
    corpus: &Path,
    corpus_bytes: u64,
    clients: usize,
) -> anyhow::Result<()> {
    // Every client here has one address; a real storm comes from many.
    let one_address = ["--max-git-processes-per-client=0"];
    let ours = grasp_server(&one_address);
    let ours_url = host_corpus(&ours, corpus).await?;
    let proxy = grasp_proxy(&one_address);
    let proxy_url = host_corpus(&proxy, corpus).await?;
    let proxy_groups = {
        let upstream = proxy.upstream().context("grasp-proxy runs with its nginx")?;
        let [nginx, fcgiwrap] = upstream.process_groups();
        vec![proxy.pid(), nginx, fcgiwrap]
    };
    let (nginx, _root) = NginxGit::start_empty()?;
    let copied = Command::new("cp").arg("-r").arg(corpus).arg(nginx.root().join("corpus.git")).status()?;
    anyhow::ensure!(copied.success(), "copying the corpus for nginx failed");
    let nginx_url = nginx.url("corpus.git");
    let nginx_groups = nginx.process_groups().to_vec();
    let targets: [(&str, &str, Vec<u32>); 3] = [
        ("grasp-server", &ours_url, vec![ours.pid()]),
        ("grasp-proxy + upstream", &proxy_url, proxy_groups),
        ("nginx", &nginx_url, nginx_groups),
    ];
    let mut results = Vec::new();
    for phase in ["cold", "warm"] {
        for (name, url, groups) in &targets {
            let (wall, cpu) = storm_once(url, clients, groups)?;
            eprintln!("storm {phase} {name}: {:.2} s wall, {cpu:.2} s CPU", wall.as_secs_f64());
            results.push((phase, *name, wall, cpu));
        }
    }
    let size = mib(corpus_bytes as f64);
    for phase in ["cold", "warm"] {
        let of = |name: &str| {
            results.iter().find(|r| r.0 == phase && r.1 == name).map(|r| (r.2, r.3)).expect("measured")
        };
        let (base_wall, base_cpu) = of("nginx");
        for name in ["grasp-server", "grasp-proxy + upstream"] {
            let (wall, cpu) = of(name);
            let cpu_ratio = cpu / base_cpu;
            let wall_ratio = wall.as_secs_f64() / base_wall.as_secs_f64();
            let warm = phase == "warm";
            report.add(Row {
                scenario: format!(
                    "{clients} concurrent clones of a {size} repository, {phase} cache: {name}"
                ),
                ours: format!("{cpu:.2} s CPU, {:.2} s wall", wall.as_secs_f64()),
                baseline: format!(
                    "nginx + git http-backend {base_cpu:.2} s CPU, {:.2} s wall",
                    base_wall.as_secs_f64()
                ),
                comparison: format!("{cpu_ratio:.2}× CPU, {wall_ratio:.2}× wall"),
                target: if warm {
                    "≤ 0.5× CPU, no slower (≤ 1.05× wall)".into()
                } else {
                    "reported".into()
                },
                met: warm.then_some(cpu_ratio <= 0.5 && wall_ratio <= 1.05),
            });
        }
    }
    let disk = metric_sum(&ours.metrics().await, "grasp_pack_cache_disk_bytes", &[]);
    report.add(Row {
        scenario: "pack cache disk use after the storms (grasp-server)".into(),
        ours: mib(disk),
        baseline: "-".into(),
        comparison: "-".into(),
        target: "reported".into(),
        met: None,
    });
    Ok(())
}
