//! Whose work an instance does, so that each kind draws on its own share of the host's limits.
//!
//! Clients can fill every instance slot and every pooled connection (a burst, a slow database);
//! the host's own timers and job workers must still run then, or sweeps stop, jobs pile up and
//! routing stalls. Their requests (`crate::loopback`) carry the host's mark and draw on a budget
//! of instance slots and pooled connections that clients cannot reach.

/// Which share of the host's slots and pools an instance draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Budget {
    /// Requests from clients.
    Requests,
    /// The host's own timed requests and job runs.
    Host,
}

impl Budget {
    /// The label value in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Budget::Requests => "requests",
            Budget::Host => "host",
        }
    }
}
