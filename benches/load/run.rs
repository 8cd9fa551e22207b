//! The load modes and their tables: `run` (the default: the CPU table, then the others),
//! `clients` (our `Client` as the generator) and `drive` (an already-running server).

use std::net::SocketAddr;

use crate::generators::LoadGenerator;
use crate::measure::{
    LoadOptions, Measurement, Summary, measure, measure_one, ratio, show, summarize,
};
use crate::memory::{BurstOptions, burst_report, idle_report};
use crate::options::{Impl, LoadSpec, Options};
use crate::{CLIENT_CONFIGS, DEFAULT_CONFIGS, DEFAULT_IMPLS, Result, runtime};

/// Prints what each server is.
fn print_servers(impls: &[Impl], server_threads: usize) {
    println!("servers, each in its own process with {server_threads} worker thread(s):");
    for which in impls {
        println!("  {:<21} {}", which.to_string(), which.describe());
    }
}

pub(crate) fn run_main(opts: &Options, smoke: bool) -> Result<()> {
    let (configs, client_configs, warmup, duration, idle, burst) = if smoke {
        ("1x4x16,2x2x100k", "1x4x16", 0.1, 0.3, 0, 20)
    } else {
        (DEFAULT_CONFIGS, CLIENT_CONFIGS, 1.0, 3.0, 10_000, 2_000)
    };
    let specs = LoadSpec::parse_list(opts.str_or("configs", configs))?;
    let client_specs = match opts.str_or("client-configs", client_configs) {
        "none" => Vec::new(),
        list => LoadSpec::parse_list(list)?,
    };
    let load = LoadOptions::parse(opts, warmup, duration)?;
    let impls = opts.impls_or(DEFAULT_IMPLS)?;
    let idle_conns = opts.size_or("idle-conns", idle)?;
    let burst = BurstOptions::parse(opts, opts.size_or("burst-conns", burst)?)?;
    if smoke {
        println!("smoke check (run with `cargo bench --bench load` for figures)");
    }
    print_servers(&impls, load.server_threads);
    let rt = runtime(load.client_threads)?;
    for generator in opts.generators_or("raw")? {
        println!();
        println!(
            "load: {} generator, {} client thread(s); warm-up {:?}, measured {:?}, {} run(s) each",
            generator.name(),
            load.client_threads,
            load.warmup,
            load.duration,
            load.repeat,
        );
        let mut rows = Vec::new();
        for spec in &specs {
            let mut results = Vec::new();
            for &which in impls.iter().cycle().take(impls.len() * load.repeat) {
                let m = measure_one(&rt, generator, which, *spec, &load, &which.to_string())?;
                results.push((which, m));
            }
            rows.push((*spec, results));
        }
        println!();
        println!("load from the {} generator:", generator.name());
        print_table(&rows, &impls);
    }
    if !client_specs.is_empty() {
        println!();
        let generators = opts_generators(CLIENT_GENERATORS)?;
        clients_report(&rt, &client_specs, &generators, Impl::Ours, &load)?;
    }
    if idle_conns > 0 {
        println!();
        idle_report(idle_conns, &impls, load.server_threads, burst.settle)?;
    }
    if burst.conns > 0 {
        println!();
        burst_report(&burst, &impls, load.server_threads)?;
    }
    Ok(())
}

/// The generators of the `clients` table: the raw baseline first, then our `Client` used
/// both ways.
const CLIENT_GENERATORS: &str = "raw,client,client-unordered,client-pipeline";

/// Generators by name, without options.
fn opts_generators(names: &str) -> Result<Vec<&'static dyn LoadGenerator>> {
    Options::default().generators_or(names)
}

/// `clients`: our `Client` as the load generator against the raw tokio-tungstenite one.
pub(crate) fn clients_main(opts: &Options) -> Result<()> {
    let specs = LoadSpec::parse_list(opts.str_or("configs", CLIENT_CONFIGS))?;
    let load = LoadOptions::parse(opts, 1.0, 3.0)?;
    let which: Impl = opts.str_or("impl", "ours").parse()?;
    let generators = opts.generators_or(CLIENT_GENERATORS)?;
    print_servers(&[which], load.server_threads);
    println!();
    let rt = runtime(load.client_threads)?;
    clients_report(&rt, &specs, &generators, which, &load)
}

/// Loads server `which` from each generator in turn (interleaved, `repeat` times) and
/// prints, for each load, the throughput and the generator's CPU per request of each, as
/// ratios to the first generator's.
fn clients_report(
    rt: &tokio::runtime::Runtime,
    specs: &[LoadSpec],
    generators: &[&'static dyn LoadGenerator],
    which: Impl,
    load: &LoadOptions,
) -> Result<()> {
    let [base, others @ ..] = generators else {
        return Err("no generator".into());
    };
    println!(
        "the client as load generator: {which} server; {} client thread(s); warm-up {:?}, \
         measured {:?}, {} run(s) each; generators:",
        load.client_threads, load.warmup, load.duration, load.repeat
    );
    for generator in generators {
        println!("  {:<16} {}", generator.key(), generator.name());
    }
    let mut rows = Vec::new();
    for spec in specs {
        let mut results: Vec<(&str, Measurement)> = Vec::new();
        for generator in generators
            .iter()
            .cycle()
            .take(generators.len() * load.repeat)
        {
            let m = measure_one(rt, *generator, which, *spec, load, generator.key())?;
            results.push((generator.key(), m));
        }
        rows.push((*spec, results));
    }
    println!();
    let mut header = format!("| config | {} req/s |", base.key());
    for g in others {
        header += &format!(" {} req/s | ÷ {} (≥ 0.9) |", g.key(), base.key());
    }
    header += &format!(" {} µs/req |", base.key());
    for g in others {
        header += &format!(" {} µs/req | ÷ {} |", g.key(), base.key());
    }
    println!("generator CPU per request: this process's CPU time over the replies it counted");
    println!("{header}");
    println!("|---|{}", "---:|".repeat(1 + 4 * others.len() + 1));
    for (spec, results) in &rows {
        let summary = |key: &str| summarize(results, |k| *k == key);
        let rate = |s: Option<Summary>| s.map(|s| s.rate);
        let cpu = |s: Option<Summary>| s.map(|s| s.client_us_per_req);
        let base = summary(base.key());
        let mut line = format!("| {spec} | {} |", show(rate(base), 0));
        for g in others {
            let s = summary(g.key());
            line += &format!(" {} | {} |", show(rate(s), 0), ratio(rate(s), rate(base)));
        }
        line += &format!(" {} |", show(cpu(base), 2));
        for g in others {
            let s = summary(g.key());
            line += &format!(" {} | {} |", show(cpu(s), 2), ratio(cpu(s), cpu(base)));
        }
        println!("{line}");
    }
    Ok(())
}

/// The CPU table: ours beside every other server, throughput and server CPU per request,
/// each with ours ÷ it (targets of issue 22 against `minimal`: throughput ≥ 0.9; CPU ≤ 1.2,
/// ≤ 1.1 at 256 KiB).
fn print_table(rows: &[(LoadSpec, Vec<(Impl, Measurement)>)], impls: &[Impl]) {
    let others: Vec<Impl> = impls.iter().copied().filter(|w| *w != Impl::Ours).collect();
    let mut header = "| config | ours req/s |".to_owned();
    for o in &others {
        header += &format!(" {o} req/s | ours ÷ {o} |");
    }
    header += " ours MiB/s | ours CPU µs/req |";
    for o in &others {
        header += &format!(" {o} CPU µs/req | ours ÷ {o} |");
    }
    println!();
    println!("{header}");
    println!("|---|{}", "---:|".repeat(3 + 4 * others.len()));
    for (spec, results) in rows {
        let summary = |which: Impl| summarize(results, |w| *w == which);
        let rate = |s: Option<Summary>| s.map(|s| s.rate);
        let cpu = |s: Option<Summary>| s.and_then(|s| s.us_per_req);
        let ours = summary(Impl::Ours);
        let mut line = format!("| {spec} | {} |", show(rate(ours), 0));
        for &o in &others {
            let s = summary(o);
            line += &format!(" {} | {} |", show(rate(s), 0), ratio(rate(ours), rate(s)));
        }
        line += &format!(
            " {} | {} |",
            show(ours.map(|s| s.mib_per_s), 1),
            show(cpu(ours), 2)
        );
        for &o in &others {
            let s = summary(o);
            line += &format!(" {} | {} |", show(cpu(s), 2), ratio(cpu(ours), cpu(s)));
        }
        println!("{line}");
    }
}

/// `drive`: load an already-running server (e.g. one under `perf record`).
pub(crate) fn drive_main(opts: &Options) -> Result<()> {
    let addr: SocketAddr = opts.get("addr").ok_or("drive needs --addr")?.parse()?;
    let pid = opts.get("pid").map(str::parse::<u32>).transpose()?;
    let specs = LoadSpec::parse_list(opts.str_or("configs", DEFAULT_CONFIGS))?;
    let warmup = opts.secs_or("warmup", 1.0)?;
    let duration = opts.secs_or("duration", 3.0)?;
    let rt = runtime(opts.size_or("client-threads", 1)?)?;
    for spec in specs {
        for generator in opts.generators_or("raw")? {
            let m = rt.block_on(measure(generator, addr, pid, spec, warmup, duration))?;
            println!(
                "{spec} ({}): {} requests, {:.0} req/s, {:.1} MiB/s, server {} µs/req",
                generator.name(),
                m.requests,
                m.rate(),
                m.mib_per_s(),
                // Three decimals: `drive` is for comparing two builds of our server, where
                // a few nanoseconds per request are the question.
                m.server_us_per_req()
                    .map_or("?".into(), |us| format!("{us:.3}"))
            );
        }
    }
    Ok(())
}
