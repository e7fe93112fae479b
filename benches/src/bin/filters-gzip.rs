//! `filters-gzip`: the `filters` crate's gzip and gunzip as a stdin-to-stdout filter, for
//! `benches/compare-gzip.sh` (which runs it next to `gzip -1`/`gzip -9` on the same corpus).
//! It drives a [`filters::GzipStream`] the way the daemons' event loops do: read a chunk,
//! push what the stream takes, take every member that is ready, and wait for the waker
//! (here: park) only when the stream is full.
//!
//! ```text
//! filters-gzip [--level fast|best] [--threads N] < in > out.gz
//! filters-gzip -d < in.gz > out
//! ```
//! On stderr: bytes in and out, wall and CPU seconds of the whole process (all threads).

use std::io::{Read, Write};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use filters::{GunzipReader, GzipOutput, GzipPool, Level, Waker};

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let start = Instant::now();
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let (bytes_in, bytes_out);
    if args.iter().any(|a| a == "-d") {
        let mut r = GunzipReader::new(input);
        bytes_out = std::io::copy(&mut r, &mut out).context("gunzip")?;
        bytes_in = r.decoder().bytes_in();
    } else {
        let level = match get("--level").as_deref() {
            None | Some("fast") => Level::Fast,
            Some("best") => Level::Best,
            Some(o) => bail!("--level fast|best, not {o}"),
        };
        let threads = match get("--threads") {
            Some(t) => t.parse::<NonZeroUsize>().context("--threads")?,
            None => filters::default_threads(),
        };
        let pool = GzipPool::new(threads);
        let main = std::thread::current();
        let waker: Waker = Arc::new(move || main.unpark());
        let mut s = pool.stream(level, Some(waker))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut eof = false;
        let (mut have, mut at) = (0usize, 0usize);
        loop {
            if at == have && !eof {
                have = input.read(&mut buf)?;
                at = 0;
                eof = have == 0;
                if eof {
                    s.finish()?;
                }
            }
            if at < have {
                at += s.push(&buf[at..have])?;
            }
            let mut progressed = false;
            loop {
                match s.poll_output()? {
                    GzipOutput::Chunk(c) => {
                        out.write_all(&c)?;
                        s.recycle(c);
                        progressed = true;
                    }
                    GzipOutput::Finished => {
                        out.flush()?;
                        bytes_in = s.bytes_in();
                        bytes_out = s.bytes_out();
                        report(start, bytes_in, bytes_out);
                        return Ok(());
                    }
                    GzipOutput::Pending => break,
                }
            }
            // Full (or finishing) and nothing ready: wait for the waker.
            if !progressed && (eof || at < have) {
                std::thread::park();
            }
        }
    }
    out.flush()?;
    report(start, bytes_in, bytes_out);
    Ok(())
}

fn report(start: Instant, bytes_in: u64, bytes_out: u64) {
    eprintln!(
        "filters-gzip: in {bytes_in} out {bytes_out} wall {:.3} cpu {:.3}",
        start.elapsed().as_secs_f64(),
        cpu_seconds()
    );
}
