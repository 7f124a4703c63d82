use crate::key::MintError;

/// Everything a reconcile can fail with. Bad user input is never an `Error`:
/// it becomes a `Ready=False` condition instead, so it does not retry forever.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    #[error(transparent)]
    Mint(#[from] MintError),

    #[error("{0} has no {1}")]
    MissingField(&'static str, &'static str),

    #[error("not writing: the leader lease was not renewed in time")]
    NotLeader,

    #[error("{0}: the writes did not settle within one reconcile; retrying")]
    Unsettled(String),
}

impl Error {
    /// Wraps a client error with what the operator was doing.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Error::Kube { action, source }
    }

    /// A short, bounded label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube { source: kube::Error::Api(status), .. } if status.code == 409 => "conflict",
            Error::Kube { .. } => "kube_api",
            Error::Mint(_) => "key_mint",
            Error::MissingField(..) => "missing_field",
            Error::NotLeader => "not_leader",
            Error::Unsettled(_) => "unsettled",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
