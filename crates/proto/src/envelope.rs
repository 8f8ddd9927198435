//! How workflow messages travel between nodes, and what they cost.
//!
//! A message is a JSON header followed by raw blobs (inputs, outputs and
//! state values), so payloads are sent as they are — never inflated by
//! base64 — and each byte can be put in its category:
//! `[u32 BE header length][header JSON][blob 0][blob 1]…`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// What a blob is, for the traffic accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A function's input or output.
    Arg,
    /// A state's value.
    State,
}

/// A header plus blobs.
#[derive(Debug, Clone)]
pub struct Envelope<H> {
    /// The JSON part.
    pub header: H,
    /// The payloads, with their kind.
    pub blobs: Vec<(Kind, Bytes)>,
}

#[derive(Serialize, Deserialize)]
struct Framed<H> {
    #[serde(flatten)]
    header: H,
    blobs: Vec<(Kind, usize)>,
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed workflow message: {0}")]
pub struct WireError(pub String);

impl<H: Serialize + DeserializeOwned> Envelope<H> {
    /// An envelope with no blobs.
    pub fn new(header: H) -> Self {
        Self {
            header,
            blobs: Vec::new(),
        }
    }

    /// Adds a blob; returns its index.
    pub fn push(&mut self, kind: Kind, data: Bytes) -> usize {
        self.blobs.push((kind, data));
        self.blobs.len() - 1
    }

    /// Encodes it, and how many bytes of it were of each kind.
    pub fn encode(&self) -> Result<(Bytes, Cost), WireError> {
        let framed = Framed {
            header: &self.header,
            blobs: self.blobs.iter().map(|(k, b)| (*k, b.len())).collect(),
        };
        let json = serde_json::to_vec(&framed).map_err(|e| WireError(e.to_string()))?;
        let payload: usize = self.blobs.iter().map(|(_, b)| b.len()).sum();
        let mut out = BytesMut::with_capacity(4 + json.len() + payload);
        out.put_u32(json.len() as u32);
        out.put_slice(&json);
        let mut cost = Cost {
            control: 4 + json.len() as u64,
            ..Cost::default()
        };
        for (kind, b) in &self.blobs {
            out.put_slice(b);
            cost.add_blob(*kind, b.len());
        }
        Ok((out.freeze(), cost))
    }

    /// Decodes a message.
    pub fn decode(mut raw: Bytes) -> Result<Self, WireError> {
        if raw.len() < 4 {
            return Err(WireError("shorter than its length prefix".into()));
        }
        let len = raw.get_u32() as usize;
        if raw.len() < len {
            return Err(WireError("header longer than the message".into()));
        }
        let json = raw.split_to(len);
        let framed: Framed<H> =
            serde_json::from_slice(&json).map_err(|e| WireError(e.to_string()))?;
        let mut blobs = Vec::with_capacity(framed.blobs.len());
        for (kind, n) in framed.blobs {
            if raw.len() < n {
                return Err(WireError("blob longer than the message".into()));
            }
            blobs.push((kind, raw.split_to(n)));
        }
        if !raw.is_empty() {
            return Err(WireError("trailing bytes".into()));
        }
        Ok(Self {
            header: framed.header,
            blobs,
        })
    }

    /// Blob `i`, or an error naming it.
    pub fn blob(&self, i: usize) -> Result<Bytes, WireError> {
        self.blobs
            .get(i)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| WireError(format!("no blob {i}")))
    }
}

/// Bytes a node sent for one execution, by category.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cost {
    /// Function inputs and outputs.
    pub args: u64,
    /// State values.
    pub states: u64,
    /// Everything else: headers of our messages, references, the plan and
    /// mapping, reports.
    pub control: u64,
    /// Bytes that crossed HTTP (bodies plus request/response heads);
    /// transfers between tasks on the same node cross nothing.
    pub wire: u64,
}

impl Cost {
    fn add_blob(&mut self, kind: Kind, n: usize) {
        match kind {
            Kind::Arg => self.args += n as u64,
            Kind::State => self.states += n as u64,
        }
    }

    /// Adds `other` to this.
    pub fn add(&mut self, other: &Cost) {
        self.args += other.args;
        self.states += other.states;
        self.control += other.control;
        self.wire += other.wire;
    }
}

/// Approximate size of an HTTP/1.1 request head we send.
pub fn request_head_bytes(url: &str, body: usize) -> u64 {
    // "POST <path> HTTP/1.1\r\nhost: …\r\ncontent-type: …\r\ncontent-length: …\r\n\r\n"
    (url.len() + 96 + body.to_string().len()) as u64
}

/// Approximate size of an HTTP/1.1 response head we send.
pub fn response_head_bytes(body: usize) -> u64 {
    (96 + body.to_string().len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct H {
        task: String,
    }

    #[test]
    fn round_trip_and_cost() {
        let mut e = Envelope::new(H { task: "t1".into() });
        e.push(Kind::Arg, Bytes::from_static(b"hello"));
        e.push(Kind::State, Bytes::from(vec![7u8; 1000]));
        let (raw, cost) = e.encode().unwrap();
        assert_eq!(cost.args, 5);
        assert_eq!(cost.states, 1000);
        assert_eq!(cost.control + cost.args + cost.states, raw.len() as u64);
        let back = Envelope::<H>::decode(raw.clone()).unwrap();
        assert_eq!(back.header, H { task: "t1".into() });
        assert_eq!(back.blob(1).unwrap().len(), 1000);
        assert!(Envelope::<H>::decode(raw.slice(..raw.len() - 1)).is_err());
        assert!(Envelope::<H>::decode(Bytes::from_static(b"\0\0\0\x09{}")).is_err());
    }
}
