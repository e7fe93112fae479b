//! `portpool`: capacity planning, config checks and firewall rules for Amanda port ranges.
//!
//! ```text
//! portpool --simulate [--inparallel 20 --range 850-859 --dles 40 ...] [--plot night.svg]
//! portpool check CONFIG                       exit 0: fine, 1: warnings, 2: errors
//! portpool rules CONFIG [--format nft|iptables] [--side server|clients|HOST]
//! ```
//!
//! Exit codes: 0 success (check: no finding), 1 check found warnings only, 2 check found
//! errors, or any command could not run (bad flags, unreadable configuration).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};

use portpool::check;
use portpool::conf_adapter::{self, Sources};
use portpool::rules::{self, Format, Side};
use portpool::sim::{self, SimParams, parse_duration, parse_rate, parse_size};
use proto::Auth;
use proto::ports::PortRange;

#[derive(Parser, Debug)]
#[command(
    name = "portpool",
    version,
    about = "Amanda port ranges as a resource: simulate a night, check a config, write firewall rules",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Simulate a backup night under the Amanda 2.4, Amanda 3.5 and portpool policies.
    #[arg(long)]
    simulate: bool,
    #[command(flatten)]
    sim: SimArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Lint the port settings of a configuration.
    Check(CheckArgs),
    /// Firewall rules for the server and each client of a configuration.
    Rules(RulesArgs),
}

#[derive(Args, Debug, Clone)]
struct SourceArgs {
    /// Where configurations live (CONFIG is a name under it, or a directory).
    #[arg(long, default_value = "/etc/amanda")]
    config_dir: PathBuf,
    /// amanda-client.conf of this host.
    #[arg(long, default_value = "/etc/amanda/amanda-client.conf")]
    client_conf: PathBuf,
    /// The security file the real Amanda's ambind enforces.
    #[arg(long, default_value = "/etc/amanda-security.conf")]
    security_file: PathBuf,
    /// The services database.
    #[arg(long, default_value = "/etc/services")]
    services: PathBuf,
}

#[derive(Args, Debug, Clone)]
struct SimArgs {
    /// Read DLEs, auth, inparallel, maxdumps and ranges from this configuration
    /// (name under --config-dir, or a directory); flags given too override it.
    #[arg(long, value_name = "CONFIG")]
    config: Option<String>,
    #[command(flatten)]
    sources: SourceArgs,
    /// PRNG seed (printed; the same seed gives the same night).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Dumpers per configuration.
    #[arg(long)]
    inparallel: Option<u32>,
    /// The reserved range of the control sockets (850-859 or 850,859).
    #[arg(long)]
    range: Option<PortRange>,
    /// The unreserved TCP range of data connections.
    #[arg(long)]
    data_range: Option<PortRange>,
    /// Number of DLEs (without --config).
    #[arg(long)]
    dles: Option<usize>,
    /// Number of client hosts (default: DLEs / 2).
    #[arg(long)]
    hosts: Option<usize>,
    /// Mean DLE size (sizes are log-normal around it): 2GiB, 500MB...
    #[arg(long, default_value = "2GB")]
    size: String,
    /// Shape of the size distribution (0: all equal).
    #[arg(long, default_value_t = 1.0)]
    spread: f64,
    /// Total network bandwidth of the server: 1Gbit/s, 125MB/s...
    #[arg(long, default_value = "1Gbit/s")]
    bandwidth: String,
    /// What one dump can reach on its own.
    #[arg(long, default_value = "40MB/s")]
    client_rate: String,
    /// Auth of every DLE (without --config).
    #[arg(long)]
    auth: Option<Auth>,
    /// Concurrent dumps per client host.
    #[arg(long)]
    maxdumps: Option<u32>,
    /// Configurations running the same night on the server (DLEs are split among them).
    #[arg(long, default_value_t = 1)]
    configs: usize,
    /// The night's window.
    #[arg(long, default_value = "8h")]
    window: String,
    /// TIME_WAIT of a TCP source port towards the client it closed.
    #[arg(long, default_value = "60s")]
    time_wait: String,
    /// Do not skip ports /etc/services assigns to other services.
    #[arg(long)]
    no_skip_services: bool,
    /// Skip the search for the smallest sufficient range.
    #[arg(long)]
    no_search: bool,
    /// Draw port occupancy over the night into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Configuration name (under --config-dir) or directory.
    config: String,
    #[command(flatten)]
    sources: SourceArgs,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum FormatArg {
    Nft,
    Iptables,
}

#[derive(Args, Debug)]
struct RulesArgs {
    /// Configuration name (under --config-dir) or directory.
    config: String,
    #[command(flatten)]
    sources: SourceArgs,
    #[arg(long, value_enum, default_value = "nft")]
    format: FormatArg,
    /// `server`, `clients` (every client), or one client's host name. Default: all.
    #[arg(long)]
    side: Option<String>,
    /// The server's address(es) as clients see it (default: this host's name, resolved).
    #[arg(long = "server-address", value_name = "ADDR")]
    server_addresses: Vec<std::net::IpAddr>,
    /// Make the table the host's whole input firewall: drop every incoming packet it does
    /// not accept (loopback, ICMP and established traffic excepted).
    #[arg(long)]
    default_drop: bool,
}

fn main() -> ExitCode {
    // The one log-level convention of amanda-rs (README, "Log level"): AMANDA_RS_LOG.
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("AMANDA_RS_LOG", "warn")).init();
    let cli = Cli::parse();
    let result = match (cli.command, cli.simulate) {
        (Some(Command::Check(args)), _) => check(&args),
        (Some(Command::Rules(args)), _) => rules(&args),
        (None, true) => simulate(&cli.sim),
        (None, false) => {
            eprintln!(
                "portpool: say what to do: --simulate, check CONFIG or rules CONFIG (see --help)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portpool: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn sources(config: &str, s: &SourceArgs) -> Sources {
    Sources {
        config: config.to_owned(),
        config_dir: s.config_dir.clone(),
        client_conf: s.client_conf.clone(),
        security_file: s.security_file.clone(),
        services: s.services.clone(),
    }
}

/// A flag's value as the simulator parsed it, or an error naming the flag.
fn flag<T>(parsed: std::result::Result<T, String>, name: &'static str) -> Result<T> {
    parsed.map_err(anyhow::Error::msg).context(name)
}

fn sim_params(args: &SimArgs) -> Result<SimParams> {
    let mut p = SimParams::seed_case();
    p.seed = args.seed;
    p.configs = args.configs.max(1);
    p.skip_services = !args.no_skip_services;
    p.bandwidth = flag(parse_rate(&args.bandwidth), "--bandwidth")?;
    p.client_rate = flag(parse_rate(&args.client_rate), "--client-rate")?;
    p.window = flag(parse_duration(&args.window), "--window")?;
    p.time_wait = flag(parse_duration(&args.time_wait), "--time-wait")?;
    let mean = flag(parse_size(&args.size), "--size")?;
    p.services = portpool_alloc::pool::load_services(&args.sources.services)?;
    if let Some(config) = &args.config {
        let site = conf_adapter::load_site(&sources(config, &args.sources))
            .with_context(|| format!("configuration {config}"))?;
        conf_adapter::sim_from_site(&mut p, &site, mean, args.spread);
    } else {
        let dles = args.dles.unwrap_or(40);
        let hosts = args.hosts.unwrap_or(dles.div_ceil(2)).max(1);
        p.generate(
            dles,
            hosts,
            mean,
            args.spread,
            args.auth.unwrap_or(Auth::Bsd),
        );
    }
    if let Some(n) = args.inparallel {
        p.inparallel = n.max(1);
    }
    if let Some(n) = args.maxdumps {
        p.maxdumps = n.max(1);
    }
    if let Some(r) = args.range {
        p.udp_range = r;
        p.tcp_range = r;
    }
    if let Some(r) = args.data_range {
        p.data_range = r;
    }
    if args.config.is_some()
        && let Some(auth) = args.auth
    {
        p.dles.iter_mut().for_each(|d| d.auth = auth);
    }
    if p.dles.is_empty() {
        bail!("no DLE to simulate (--dles 0, or an empty disklist)");
    }
    for proto in p.control_protos() {
        if p.effective(proto).1 == 0 {
            bail!("the {proto} range has no usable port; give a wider --range");
        }
    }
    p.record = args.plot.is_some();
    Ok(p)
}

fn simulate(args: &SimArgs) -> Result<ExitCode> {
    let params = sim_params(args)?;
    let (outcomes, text) = sim::report::simulate(&params, !args.no_search);
    print!("{text}");
    if let Some(path) = &args.plot {
        let svg = sim::svg::render(&params, &outcomes);
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
        println!("\nplot: {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn check(args: &CheckArgs) -> Result<ExitCode> {
    let mut site = conf_adapter::load_site(&sources(&args.config, &args.sources))
        .with_context(|| format!("configuration {}", args.config))?;
    site.privilege = Some(conf_adapter::current_privilege());
    let findings = check::check(&site);
    print!("{}", check::render(&site, &findings));
    Ok(ExitCode::from(check::exit_code(&findings)))
}

fn rules(args: &RulesArgs) -> Result<ExitCode> {
    let mut site = conf_adapter::load_site(&sources(&args.config, &args.sources))
        .with_context(|| format!("configuration {}", args.config))?;
    site.server_addresses = args.server_addresses.clone();
    conf_adapter::resolve_addresses(&mut site);
    let format = match args.format {
        FormatArg::Nft => Format::Nft,
        FormatArg::Iptables => Format::Iptables,
    };
    let side = match args.side.as_deref() {
        None => Side::All,
        Some("server") => Side::Server,
        Some("clients") => Side::Clients,
        Some(host) => Side::Client(host.to_owned()),
    };
    let opts = rules::Options {
        default_drop: args.default_drop,
    };
    let text = rules::render_with(&site, format, &side, &opts).map_err(anyhow::Error::msg)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}
