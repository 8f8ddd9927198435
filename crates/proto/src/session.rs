//! How session state travels between nodes: commits and listings of the
//! state server, and whole sessions handed over in a migration. Values are
//! base64 in JSON.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use edge_host_api::{Commit, Versioned};
use serde::{Deserialize, Serialize};

/// A [`Commit`] as JSON: values in base64.
#[derive(Debug, Serialize, Deserialize)]
pub struct WireCommit {
    /// Keys read and the version seen (`null`: absent).
    pub reads: Vec<(String, Option<u64>)>,
    /// Keys written: base64 bytes to set, `null` to delete.
    pub writes: Vec<(String, Option<String>)>,
}

impl From<&Commit> for WireCommit {
    fn from(c: &Commit) -> Self {
        Self {
            reads: c.reads.clone(),
            writes: c
                .writes
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(|b| B64.encode(b))))
                .collect(),
        }
    }
}

impl TryFrom<WireCommit> for Commit {
    type Error = base64::DecodeError;

    fn try_from(w: WireCommit) -> Result<Self, Self::Error> {
        let writes = w
            .writes
            .into_iter()
            .map(|(k, v)| Ok((k, v.map(|s| B64.decode(s)).transpose()?)))
            .collect::<Result<_, base64::DecodeError>>()?;
        Ok(Commit {
            reads: w.reads,
            writes,
        })
    }
}

/// One key of a session with its value (base64) and version: how a
/// migrating session travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireEntry {
    /// The key.
    pub key: String,
    /// The value, base64.
    pub value: String,
    /// Its version.
    pub version: u64,
}

impl WireEntry {
    /// Encodes one entry.
    pub fn encode(key: &str, v: &Versioned) -> Self {
        Self {
            key: key.to_owned(),
            value: B64.encode(&v.value),
            version: v.version,
        }
    }

    /// Decodes one entry.
    pub fn decode(self) -> Result<(String, Versioned), base64::DecodeError> {
        Ok((
            self.key,
            Versioned {
                value: B64.decode(self.value)?,
                version: self.version,
            },
        ))
    }
}

/// One key of a session listing.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyVersion {
    /// The key.
    pub key: String,
    /// Its version.
    pub version: u64,
}

/// What a node sends to take in a migrating session.
#[derive(Debug, Serialize, Deserialize)]
pub struct ImportRequest {
    /// The session's whole state, with versions.
    pub entries: Vec<WireEntry>,
    /// The functions called on the session: the target refuses the session
    /// (409 `function_missing`) unless it has them all.
    #[serde(default)]
    pub functions: Vec<String>,
}
