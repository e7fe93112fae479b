//! The zero-copy step of the DATA path: how many archive bytes are waiting in a pipe, their
//! CRC when one is wanted, without moving them out of the pipe. The bytes then go from the
//! pipe to the socket with `splice` ([`super::Conn::push_splice`]).
//!
//! `tee` duplicates the pipe's pages into a side pipe (no copy), which tells the count and
//! leaves the archive pipe untouched; the side copy is either read once for the CRC (the
//! only pass over the bytes in user space) or dropped into /dev/null unread.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// What receives the bytes for the CRC pass.
pub type CrcSink<'a> = &'a mut dyn FnMut(&[u8]);

/// A side pipe for `tee`, a buffer for the CRC pass, /dev/null for the rest.
pub struct ZeroCopy {
    read: OwnedFd,
    write: OwnedFd,
    null: std::fs::File,
    scratch: Vec<u8>,
    max: usize,
}

impl ZeroCopy {
    /// A side pipe that takes up to `max` bytes per step.
    pub fn new(max: usize) -> io::Result<ZeroCopy> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // SAFETY: fcntl on a pipe we just created; a refusal leaves the default size.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, max as libc::c_int) };
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        Ok(ZeroCopy {
            read,
            write,
            null,
            scratch: vec![0; max],
            max,
        })
    }

    /// Looks at the bytes waiting in `pipe` (up to the step size) and hands them to `crc`,
    /// leaving them in the pipe. Returns their count, `Ok(0)` at end of file, `WouldBlock`
    /// when the pipe is empty, `Unsupported` when the kernel cannot tee from it.
    pub fn take(&mut self, pipe: RawFd, crc: Option<CrcSink<'_>>) -> io::Result<usize> {
        // SAFETY: both descriptors are open pipes; no user memory is involved.
        let n = unsafe {
            libc::tee(
                pipe,
                self.write.as_raw_fd(),
                self.max,
                libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) => io::ErrorKind::Unsupported.into(),
                _ => e,
            });
        }
        let n = n as usize;
        if n == 0 {
            return Ok(0);
        }
        match crc {
            Some(crc) => {
                let buf = &mut self.scratch[..n];
                read_exact_fd(self.read.as_raw_fd(), buf)?;
                crc(buf);
            }
            None => drain_to(self.read.as_raw_fd(), self.null.as_raw_fd(), n)?,
        }
        Ok(n)
    }
}

/// Reads exactly `buf.len()` bytes that are known to be in pipe `fd`.
fn read_exact_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        got += retry_eintr(|| {
            // SAFETY: read writes at most rest.len() bytes into rest.
            unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) }
        })?;
    }
    Ok(())
}

/// Moves `n` bytes that are known to be in pipe `from` to `to` without copying them.
fn drain_to(from: RawFd, to: RawFd, mut n: usize) -> io::Result<()> {
    while n > 0 {
        n -= retry_eintr(|| {
            // SAFETY: both descriptors are open; no user memory is involved.
            unsafe {
                libc::splice(
                    from,
                    std::ptr::null_mut(),
                    to,
                    std::ptr::null_mut(),
                    n,
                    libc::SPLICE_F_MOVE,
                )
            }
        })?;
    }
    Ok(())
}

/// The byte count of a `read`-like call on bytes known to be there: retried on EINTR; an
/// error otherwise, and running dry (0) is `UnexpectedEof`.
fn retry_eintr(mut call: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = call();
        if n > 0 {
            return Ok(n as usize);
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
