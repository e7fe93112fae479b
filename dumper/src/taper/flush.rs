//! `dumper flush CONFIG` (amflush's job): writes every complete dump the catalog knows that
//! is still only on the holding disk (a night whose taper had no volume, a `taperflush`
//! that kept them, a holding disk that filled) to volumes, with no flush thresholds, and
//! removes the holding files once their copies are synced. Its trace log and report say
//! what went where; the exit status is 0, or amdump's tape bit (16) when something could
//! not be written.
//!
//! What this module must not do: contact clients.

use crate::catalog::Catalog;
use crate::clock;
use crate::plan;
use crate::privs;
use crate::report::exit;

use super::night::{Setup, TapeNight};
use super::store;

/// How to flush.
#[derive(Clone, Debug)]
pub struct FlushOptions {
    /// `CONFIG`.
    pub config: String,
    /// amanda-rs settings.
    pub settings: conf::Settings,
    /// When root: become `dumpuser`.
    pub drop_privileges: bool,
    /// Print progress lines on standard error.
    pub verbose: bool,
}

/// What a flush did.
pub struct FlushResult {
    /// The report text.
    pub report: String,
    /// 0, or [`exit::TAPE`].
    pub exit_status: i32,
}

/// Runs a flush.
pub fn flush(o: &FlushOptions) -> anyhow::Result<FlushResult> {
    let plan = plan::load(&o.config)?;
    if o.drop_privileges && privs::is_root() {
        privs::drop_to(&plan.config.dumpuser)?;
    }
    let now = clock::now_unix();
    let datestamp = proto::civil::timestamp(clock::local(now));
    let catalog_path = Catalog::path_for(&plan.config.path(&plan.config.infofile));
    let _lock = crate::run::lock_run(&catalog_path)?;
    let mut catalog = Catalog::open(&catalog_path)?;
    let run_id = catalog.begin_run(&datestamp, &plan.config_name, now)?;
    let setup = Setup {
        plan: &plan,
        datestamp: &datestamp,
        settings: &o.settings,
        flush: true,
    };
    let mut text = format!(
        "Config  : {}\nDate    : {datestamp}\nFlush of the holding disk (dumper flush)\n\n",
        plan.config_name
    );
    let Some(mut tape) = TapeNight::start(&setup, &catalog).map_err(anyhow::Error::msg)? else {
        anyhow::bail!(
            "{}: no tpchanger or tapedev: there is nothing to flush to",
            plan.conf_path.display()
        );
    };
    store::ensure(catalog.connection())?;
    let todo = store::untaped(catalog.connection())?;
    for d in &todo {
        tape.leftover(d);
    }
    let verbose = o.verbose;
    let mut show = |m: &str| {
        if verbose {
            eprintln!("{m}");
        }
    };
    for m in tape.poll(&catalog) {
        show(&m);
    }
    let interrupted = crate::interrupt::received().is_some();
    let r = tape.finish(&catalog, interrupted, &mut show);
    if todo.is_empty() {
        text.push_str("Nothing to flush: every complete dump in the catalog is on a volume.\n");
    }
    text.push_str(&super::super::report::render_taper(&r));
    let exit_status = if r.failed { exit::TAPE } else { 0 };
    text.push_str(&format!("\n(exit status {exit_status})\n"));
    if let Err(e) = catalog.finish_run(run_id, clock::now_unix(), exit_status) {
        log::warn!("{e}");
    }
    Ok(FlushResult {
        report: text,
        exit_status,
    })
}
