//! `grasp-bench`: measures grasp-server against real baselines in one run and prints ratios
//! with absolute figures and machine facts. Run it through `bench/run.sh`, which builds the
//! release binaries and installs nginx, fcgiwrap and PostgreSQL when missing.
//!
//! Scenarios: `clone`, `storm`, `push`, `memory`, `proxy`, `relay`, `purgatory`, `placeholders`,
//! `hook`, `nodes` (PostgreSQL store and several nodes on it; starts its own PostgreSQL)
//! (default: all), and `soak` (10 minutes of mixed traffic; only when asked for). `--quick`
//! shrinks every size for a smoke run; its numbers are not the reference ones.

mod corpus;
mod gitbench;
mod hookbench;
mod machine;
mod nodesbench;
mod pg;
mod placeholderbench;
mod procs;
mod purgatorybench;
mod relaybench;
mod report;
mod soakbench;
mod stats;
mod stormbench;

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "grasp-bench")]
struct Args {
    /// Scenarios to run (clone, storm, push, memory, proxy, relay, purgatory, placeholders, hook, nodes); all
    /// when empty; soak only when named
    scenarios: Vec<String>,
    /// Small sizes for a fast smoke run
    #[arg(long)]
    quick: bool,
    /// Repetitions of each clone measurement
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Where the corpus and large files are cached
    #[arg(long, env = "GRASP_BENCH_CACHE")]
    cache: Option<PathBuf>,
    /// Also write the Markdown results here
    #[arg(long)]
    out: Option<PathBuf>,
    /// How long the soak runs, in seconds
    #[arg(long, default_value_t = 600)]
    soak_secs: u64,
    /// Websocket subscribers during the soak
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Every server runs in its own process group, out of reach of the terminal's Ctrl-C.
    // Dropping the run on Ctrl-C or SIGTERM (`timeout`, `kill`) drops their handles, which
    // kill the groups.
    tokio::select! {
        finished = run(args) => finished,
        _ = grasp_lib::cli::shutdown_signal() => anyhow::bail!("interrupted; every server it started is stopped"),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let all =
        ["clone", "storm", "push", "memory", "proxy", "relay", "purgatory", "placeholders", "hook", "nodes"];
    let wanted: Vec<&str> = if args.scenarios.is_empty() {
        all.to_vec()
    } else {
        args.scenarios.iter().map(String::as_str).collect()
    };
    if let Some(unknown) = wanted.iter().find(|s| !all.contains(s) && **s != "soak") {
        anyhow::bail!("unknown scenario '{unknown}'; choose from {all:?} or soak");
    }
    let cache = args.cache.clone().unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())).join(".cache/grasp-bench")
    });
    std::fs::create_dir_all(&cache)?;
    let machine = machine::describe();
    for (k, v) in &machine {
        eprintln!("{k}: {v}");
    }
    let mut report = report::Report::default();
    let mut soak_series = None;
    let q = args.quick;
    let needs_corpus = wanted.iter().any(|s| matches!(*s, "clone" | "storm" | "memory" | "proxy"));
    let corpus = if needs_corpus { Some(corpus::ensure(&cache)?) } else { None };
    for scenario in wanted {
        eprintln!("\n== {scenario}");
        match scenario {
            "clone" => {
                let (path, bytes) = corpus.as_ref().expect("corpus prepared");
                gitbench::clone(&mut report, path, *bytes, if q { 2 } else { args.repeat }).await?;
            }
            "push" => gitbench::push(&mut report, if q { 10 } else { 50 }).await?,
            "storm" => {
                let (path, bytes) = corpus.as_ref().expect("corpus prepared");
                stormbench::storm(&mut report, path, *bytes, if q { 5 } else { 20 }).await?;
            }
            "memory" => {
                let (path, _) = corpus.as_ref().expect("corpus prepared");
                let size = if q { 64 << 20 } else { 1 << 30 };
                gitbench::memory(&mut report, path, size, &cache).await?;
            }
            "proxy" => {
                let (path, bytes) = corpus.as_ref().expect("corpus prepared");
                let repeat = if q { 2 } else { args.repeat };
                let (pushes, size) = if q { (10, 64 << 20) } else { (50, 1 << 30) };
                gitbench::proxy(&mut report, path, *bytes, repeat, pushes, size, &cache).await?;
            }
            "relay" => {
                let (ingest, store) = if q { (2_000, 5_000) } else { (20_000, 100_000) };
                relaybench::relay(&mut report, ingest, store, if q { 50 } else { 300 }).await?;
            }
            "purgatory" => {
                purgatorybench::held_memory(&mut report, if q { 5_000 } else { 100_000 }).await?;
                purgatorybench::authorization_latency(&mut report, 1_000, if q { 50 } else { 500 }).await?;
            }
            "placeholders" => {
                let (most, runs) = if q { (2_000, 5) } else { (20_000, 21) };
                placeholderbench::placeholders(&mut report, most, runs).await?;
            }
            "hook" => hookbench::hook(&mut report, if q { 10 } else { 50 }).await?,
            "nodes" => {
                let plan = if q {
                    nodesbench::NodesPlan {
                        ingest_events: 2_000,
                        store_events: 5_000,
                        queries: 50,
                        pushes: 10,
                    }
                } else {
                    nodesbench::NodesPlan {
                        ingest_events: 20_000,
                        store_events: 100_000,
                        queries: 300,
                        pushes: 50,
                    }
                };
                nodesbench::nodes(&mut report, plan).await?;
            }
            "soak" => {
                let plan = soakbench::SoakPlan {
                    duration: std::time::Duration::from_secs(if q { 60 } else { args.soak_secs }),
                    subscribers: if q { 100 } else { args.subscribers },
                    events_per_sec: 5,
                    window: std::time::Duration::from_secs(if q { 10 } else { 30 }),
                };
                soak_series = Some(soakbench::soak(&mut report, plan).await?);
            }
            _ => unreachable!("checked above"),
        }
    }
    let mut table = report.markdown(&machine);
    if let Some(series) = soak_series {
        table.push_str("\nSoak, per window:\n\n");
        table.push_str(&series);
    }
    println!("\n{table}");
    if let Some(out) = args.out {
        std::fs::write(&out, &table)?;
        eprintln!("results written to {}", out.display());
    }
    Ok(())
}
