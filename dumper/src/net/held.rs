//! A connection the dumper holds: made from a port leased from `portpool`, or opened by a
//! client to our listener (a dial-in session or ambackup, issue 14), which took no port of
//! ours.
//!
//! What this module must not do: open or close connections (dropping a [`Held`] closes
//! the socket and, for a lease, gives the port back).

use portpool_alloc::Lease;

/// A socket and, when we made the connection, the lease of its source port.
#[derive(Debug)]
pub enum Held<S> {
    /// We connected from a leased port.
    Leased(Lease<S>),
    /// The client connected to our listener (`dialin yes`, ambackup); no port of ours is
    /// held.
    Accepted(S),
}

impl<S> From<Lease<S>> for Held<S> {
    fn from(l: Lease<S>) -> Self {
        Held::Leased(l)
    }
}

impl<S> Held<S> {
    /// The socket.
    pub fn socket(&self) -> &S {
        match self {
            Held::Leased(l) => l.socket(),
            Held::Accepted(s) => s,
        }
    }

    /// The socket, mutably.
    pub fn socket_mut(&mut self) -> &mut S {
        match self {
            Held::Leased(l) => l.socket_mut(),
            Held::Accepted(s) => s,
        }
    }

    /// The leased source port (none for a dialed connection).
    pub fn leased_port(&self) -> Option<u16> {
        match self {
            Held::Leased(l) => Some(l.port()),
            Held::Accepted(_) => None,
        }
    }

    /// See [`Lease::set_no_time_wait`] (nothing to do for a dialed connection).
    pub fn set_no_time_wait(&mut self) {
        if let Held::Leased(l) = self {
            l.set_no_time_wait();
        }
    }

    /// Converts the socket, keeping the lease; on failure the port is given back.
    pub fn try_map<T, E>(self, f: impl FnOnce(S) -> Result<T, E>) -> Result<Held<T>, E> {
        match self {
            Held::Leased(l) => l.try_map(f).map(Held::Leased),
            Held::Accepted(s) => f(s).map(Held::Accepted),
        }
    }
}
