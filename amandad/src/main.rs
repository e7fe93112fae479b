//! `amandad`: the Amanda client daemon of amanda-rs.
//!
//! Exit codes: 0 after an idle exit or when the superserver's connection ended; 1 when it
//! could not start (no socket, cannot bind, cannot drop privileges); 2 for a command-line
//! error of amanda-rs's own options. Everything else is reported in the log and, for the
//! server's benefit, in NAKs and REPs.

use std::process::ExitCode;

use anyhow::Context;
use log::{error, info, warn};

use amandad::args::{self, RawArgs};
use amandad::server::{Mode, Server, ServerConfig};
use amandad::{config, launch, logging, privs, services};
use proto::Auth;

fn main() -> ExitCode {
    let raw = match RawArgs::parse(std::env::args().skip(1)) {
        Ok(r) => r,
        Err(e) => {
            // Not under a superserver with a broken line of Amanda's forms (those never
            // fail), so stderr is a terminal or a service manager's log.
            if !logging::fd_is_socket(2) {
                eprintln!("amandad: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let args = raw.resolve();
    if args.help && !logging::fd_is_socket(1) {
        print!("{}", args::HELP);
        return ExitCode::SUCCESS;
    }
    if args.version && !logging::fd_is_socket(1) {
        println!(
            "amandad-3.5.1 (amanda-rs {}, protocol-compatible)",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    let loaded = config::load(
        args.own.settings.as_deref(),
        args.own.client_conf.as_deref(),
    );
    // AMANDA_RS_LOG is already in the settings; read here too for when they failed to load.
    let filter = std::env::var("AMANDA_RS_LOG")
        .ok()
        .unwrap_or_else(|| loaded.settings.log.level.clone());
    let target = args
        .own
        .log
        .clone()
        .or_else(|| loaded.settings.log.file.clone().map(args::LogTarget::File));
    let note = logging::init(target.as_ref(), &filter, loaded.settings.log.max_bytes);
    std::panic::set_hook(Box::new(|info| error!("panic: {info}")));
    if let Some(note) = note {
        warn!("{note}");
    }
    match run(args, loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: args::Args, loaded: config::Loaded) -> anyhow::Result<()> {
    for w in &loaded.warnings {
        warn!("{w}");
    }
    if let Some((e, _)) = &loaded.error {
        error!("configuration error (every request will be refused with it): {e}");
    }
    // --dial-out alone needs no socket of its own: every connection is one it opens.
    let launched = if args.dial_out && args.listen.is_empty() {
        launch::Launch {
            mode: Mode::Standalone,
            sockets: Default::default(),
        }
    } else {
        launch::sockets(&args.listen)?
    };
    // Room for a burst of datagrams while the loop is busy (kernel memory, not ours); only
    // root may go past net.core.rmem_max, so this comes before dropping it.
    for s in &launched.sockets.udp {
        config::widen_receive_buffer(s);
    }
    let user = args
        .own
        .user
        .clone()
        .unwrap_or_else(|| loaded.settings.user.clone());
    let identity = privs::drop_to(&user).with_context(|| "dropping root")?;
    // The auth of UDP sockets: -auth= when it names a UDP auth, else bsd.
    let udp_auth = match args.auth {
        Some(a) if a.is_udp() => a,
        Some(Auth::Bsdtcp) if !launched.sockets.udp.is_empty() => {
            warn!("-auth=bsdtcp given for a UDP socket; serving it as bsd");
            Auth::Bsd
        }
        _ => Auth::Bsd,
    };
    // The auth of TCP connections: ssl when -auth=ssl (or --dial-out with auth ssl: its
    // sessions are served as connections the loop accepted), else bsdtcp.
    let dial_out_ssl = args.dial_out && loaded.settings.amandad.dial_out.ssl() == Some(true);
    let tcp_auth = match args.auth {
        Some(Auth::Ssl) => Auth::Ssl,
        _ if dial_out_ssl => Auth::Ssl,
        _ => Auth::Bsdtcp,
    };
    let auth_name = match launched.mode {
        Mode::InetdUdp => udp_auth.name(),
        Mode::InetdTcp => tcp_auth.name(),
        Mode::Standalone => args.auth.unwrap_or(Auth::Bsdtcp).name(),
    };
    let features = services::features::advertised().to_hex();
    let dial_out = if args.dial_out {
        let d = amandad::dialout::DialOut::from_settings(
            &loaded.settings,
            &user,
            features.clone(),
            config::keepalive(&loaded.settings),
        )
        .and_then(|d| d.with_ssl(&loaded.settings, &loaded.client.ssl))
        .map_err(|e| anyhow::anyhow!("--dial-out: {e}"))?;
        Some(d)
    } else {
        None
    };
    info!(
        "amandad (amanda-rs {}) started: {:?}, auth {auth_name}, uid {}, services {:?}",
        env!("CARGO_PKG_VERSION"),
        launched.mode,
        identity.uid,
        args.enabled.iter().map(|s| s.name()).collect::<Vec<_>>()
    );
    let services_udp = config::service_context(&loaded, udp_auth.name(), features.clone(), &user);
    let services_tcp = config::service_context(&loaded, tcp_auth.name(), features, &user);
    // Loaded as the Amanda user, like Amanda's amandad reads its key and certificates.
    let tls = (tcp_auth == Auth::Ssl).then(|| {
        let acceptor = amandad::server::tls::Acceptor::new(loaded.client.ssl.clone());
        if let Err(e) = &acceptor.config {
            error!("auth ssl: {e}; every ssl connection will be closed until it is fixed");
        }
        acceptor
    });
    // Finds GNU tar's version now, not during the first dump on the event loop.
    services::warm_up(&services_udp);
    let hosts = config::HostsFile::new(&loaded.settings, &user, identity.uid.as_raw());
    let no_exit = args.no_exit || launched.mode == Mode::Standalone;
    let idle_exit = args
        .own
        .idle_exit
        .unwrap_or_else(|| config::idle_exit(&loaded.settings));
    let (limits, lowered) = config::limits(&loaded.settings);
    if let Some(w) = lowered {
        warn!("{w}");
    }
    let cfg = ServerConfig {
        mode: launched.mode,
        udp_auth,
        enabled: args.enabled.clone(),
        global_error: args.global_error.clone(),
        conf_error: loaded.error.clone(),
        idle_exit: (!no_exit).then_some(idle_exit),
        responder: proto::exchange::ResponderConfig {
            rep_tries: loaded.client.rep_tries.max(1),
            ..Default::default()
        },
        keepalive: config::keepalive(&loaded.settings),
        workers: loaded.settings.amandad.workers,
        dns_check: loaded.settings.dns_check,
        data_ports: config::data_ports(&loaded.client),
        services_udp,
        services_tcp,
        tcp_auth,
        tls,
        hosts: Box::new(hosts),
        limits,
        // Checked when the settings were loaded.
        extra_data_peers: loaded
            .settings
            .amandad
            .extra_data_peers()
            .unwrap_or_default(),
        compress_threads: std::num::NonZeroUsize::new(loaded.settings.amandad.compress_threads)
            .unwrap_or_else(filters::default_threads),
        dialed_server_name: loaded.settings.amandad.dial_out.server_name(),
        session_heartbeat: match loaded.settings.amandad.dial_out.session_heartbeat_secs {
            0 => None,
            n => Some(std::time::Duration::from_secs(n)),
        },
    };
    let mut server = Server::new(cfg, launched.sockets).context("starting the event loop")?;
    if let Some(d) = dial_out {
        info!(
            "dial-out: {} holds a connection to {}:{} (config {})",
            d.request.hostname, d.host, d.port, d.request.config
        );
        amandad::dialout::spawn(d, server.dialed()).context("starting the dial-out thread")?;
    }
    server.run().context("event loop")
}
