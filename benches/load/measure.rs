//! Measuring a load: one run of a generator against a server (throughput, CPU of either
//! side), and the medians over repeated runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::generators::{LoadCounters, LoadGenerator};
use crate::options::{Impl, LoadSpec, Options};
use crate::process::{ServerProcess, cpu_ns};
use crate::{BoxError, Result};

/// What one load run against one server measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measurement {
    pub(crate) requests: u64,
    elapsed: Duration,
    /// Server process CPU time in the measured window.
    server_cpu: Option<Duration>,
    /// This process's CPU time (the generator) in the measured window.
    client_cpu: Duration,
    size: usize,
}

impl Measurement {
    pub(crate) fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn mib_per_s(&self) -> f64 {
        self.rate() * self.size as f64 / (1024.0 * 1024.0)
    }

    /// The load generator's CPU (this process's) per request.
    fn client_us_per_req(&self) -> f64 {
        self.client_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }

    pub(crate) fn server_us_per_req(&self) -> Option<f64> {
        self.server_cpu
            .map(|cpu| cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64)
    }

    /// CPU use as a fraction of one core.
    fn load(cpu: Duration, elapsed: Duration) -> f64 {
        cpu.as_secs_f64() / elapsed.as_secs_f64()
    }
}

/// Runs `generator` against `addr`: connects, warms up, measures, stops and checks that every
/// request was answered.
pub(crate) async fn measure(
    generator: &dyn LoadGenerator,
    addr: SocketAddr,
    server_pid: Option<u32>,
    spec: LoadSpec,
    warmup: Duration,
    duration: Duration,
) -> Result<Measurement> {
    let counters = Arc::new(LoadCounters::default());
    let mut load = generator.run(addr, spec, Arc::clone(&counters));
    let server_cpu =
        || -> Result<Option<u64>> { server_pid.map(|pid| cpu_ns(&pid.to_string())).transpose() };
    // The replies so far, the time, the server's CPU time and ours.
    let sample = || -> Result<_> {
        Ok((
            counters.replies.load(Ordering::Relaxed),
            Instant::now(),
            server_cpu()?,
            cpu_ns("self")?,
        ))
    };
    // Drive the generator while the harness sleeps; it must not finish on its own.
    let window = async {
        tokio::time::sleep(warmup).await;
        let start = sample()?;
        tokio::time::sleep(duration).await;
        let end = sample()?;
        Ok::<_, BoxError>((start, end))
    };
    tokio::pin!(window);
    let (start, end) = tokio::select! {
        result = &mut load => {
            result?;
            return Err(format!("the {} generator stopped early", generator.name()).into());
        }
        window = &mut window => window?,
    };
    counters.stop.store(true, Ordering::Relaxed);
    tokio::time::timeout(Duration::from_secs(30), load)
        .await
        .map_err(|_| "outstanding replies did not arrive within 30 s")??;
    if end.0 == start.0 {
        return Err("no replies in the measured window".into());
    }
    Ok(Measurement {
        requests: end.0 - start.0,
        elapsed: end.1 - start.1,
        server_cpu: match (start.2, end.2) {
            (Some(a), Some(b)) => Some(Duration::from_nanos(b - a)),
            _ => None,
        },
        client_cpu: Duration::from_nanos(end.3 - start.3),
        size: spec.size,
    })
}

/// The options of a load measurement (`run`, `clients`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadOptions {
    pub(crate) warmup: Duration,
    pub(crate) duration: Duration,
    pub(crate) server_threads: usize,
    pub(crate) client_threads: usize,
    /// Runs of each server (or generator), interleaved; medians are reported.
    pub(crate) repeat: usize,
}

impl LoadOptions {
    pub(crate) fn parse(opts: &Options, warmup: f64, duration: f64) -> Result<Self> {
        Ok(LoadOptions {
            warmup: opts.secs_or("warmup", warmup)?,
            duration: opts.secs_or("duration", duration)?,
            server_threads: opts.size_or("server-threads", 1)?,
            client_threads: opts.size_or("client-threads", 1)?,
            repeat: opts.size_or("repeat", 1)?.max(1),
        })
    }
}

/// Starts server `which` for `spec`, loads it with `generator` and prints one line.
pub(crate) fn measure_one(
    rt: &tokio::runtime::Runtime,
    generator: &dyn LoadGenerator,
    which: Impl,
    spec: LoadSpec,
    load: &LoadOptions,
    label: &str,
) -> Result<Measurement> {
    let server = ServerProcess::spawn(
        which,
        spec.max_message_size(),
        spec.pipeline.max(64),
        load.server_threads,
    )?;
    let m = rt.block_on(measure(
        generator,
        server.addr,
        Some(server.pid()),
        spec,
        load.warmup,
        load.duration,
    ))?;
    println!(
        "  {:<22} {label:<21} {:>10.0} req/s {:>9.1} MiB/s  server {:>6.2} µs/req ({:>3.0}% of a core)  \
         generator {:>6.2} µs/req ({:>3.0}%)",
        spec.to_string(),
        m.rate(),
        m.mib_per_s(),
        m.server_us_per_req().unwrap_or(f64::NAN),
        m.server_cpu
            .map_or(f64::NAN, |c| 100.0 * Measurement::load(c, m.elapsed)),
        m.client_us_per_req(),
        100.0 * Measurement::load(m.client_cpu, m.elapsed),
    );
    Ok(m)
}

/// The median of each figure over the runs of one server (with `--repeat`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) rate: f64,
    pub(crate) mib_per_s: f64,
    pub(crate) us_per_req: Option<f64>,
    pub(crate) client_us_per_req: f64,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The medians of the runs whose key `pick` takes.
pub(crate) fn summarize<K>(
    results: &[(K, Measurement)],
    pick: impl Fn(&K) -> bool,
) -> Option<Summary> {
    let runs: Vec<Measurement> = results
        .iter()
        .filter(|(k, _)| pick(k))
        .map(|(_, m)| *m)
        .collect();
    Some(Summary {
        rate: median(runs.iter().map(Measurement::rate).collect())?,
        mib_per_s: median(runs.iter().map(Measurement::mib_per_s).collect())?,
        us_per_req: median(
            runs.iter()
                .filter_map(Measurement::server_us_per_req)
                .collect(),
        ),
        client_us_per_req: median(runs.iter().map(Measurement::client_us_per_req).collect())?,
    })
}

/// `a ÷ b` with two decimals, `-` if either is missing.
pub(crate) fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

/// A figure with `digits` decimals, `-` if missing.
pub(crate) fn show(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}
