//! The error type of the networking module.

/// What went wrong while setting up node or allocation networking. Every
/// variant names the interface, namespace, path or netlink operation
/// involved.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink request was refused or failed.
    #[error("netlink {op} {target}: {source}")]
    Netlink {
        /// The operation, e.g. `"add veth"`.
        op: &'static str,
        /// The interface, address or route it was about.
        target: String,
        /// The error the kernel or the netlink library reported (boxed:
        /// it is large, and errors travel far).
        #[source]
        source: Box<rtnetlink::Error>,
    },
    /// A system call or file operation failed.
    #[error("{op} {target}: {source}")]
    Sys {
        /// The call, e.g. `"setns"` or `"bind-mount netns"`.
        op: &'static str,
        /// The namespace, path or interface involved.
        target: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Something expected to exist does not.
    #[error("{what} {name:?} not found")]
    NotFound {
        /// The kind of object, e.g. `"interface"`.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// An argument is not usable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// Which argument.
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The address book failed (boxed: it is large and rare).
    #[error(transparent)]
    Ipam(Box<super::ipam::IpamError>),
    /// A helper thread died before answering.
    #[error("{op} {target}: helper thread panicked")]
    Thread {
        /// What the thread was doing.
        op: &'static str,
        /// The namespace it was doing it in.
        target: String,
    },
}

impl From<super::ipam::IpamError> for NetError {
    fn from(e: super::ipam::IpamError) -> Self {
        Self::Ipam(Box::new(e))
    }
}

impl NetError {
    pub(crate) fn netlink(
        op: &'static str,
        target: impl Into<String>,
        source: rtnetlink::Error,
    ) -> Self {
        Self::Netlink {
            op,
            target: target.into(),
            source: Box::new(source),
        }
    }

    pub(crate) fn sys(
        op: &'static str,
        target: impl Into<String>,
        source: impl Into<std::io::Error>,
    ) -> Self {
        Self::Sys {
            op,
            target: target.into(),
            source: source.into(),
        }
    }

    pub(crate) fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// The errno behind this error, when it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Netlink { source, .. } => netlink_errno(source),
            Self::Sys { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// The positive errno of a netlink error message, if it is one.
pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}

impl From<drover_model::InvalidNet> for NetError {
    fn from(e: drover_model::InvalidNet) -> NetError {
        NetError::Invalid {
            what: "IPv4 network",
            value: e.value,
            reason: e.reason.to_string(),
        }
    }
}
