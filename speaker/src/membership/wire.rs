//! Datagram format of the membership protocol.
//!
//! ```text
//! version u8 (=1) | kind u8 | sender: len u8 + UTF-8 | epoch u64 | seq u64
//! | incarnation u64 | [Suspect: target len u8 + UTF-8 | target incarnation u64]
//! | update count u8 | updates: (len u8 + UTF-8 | incarnation u64 | flags u8)*
//! | HMAC-SHA256 tag over everything before it (32 bytes)
//! ```
//!
//! Update flags: bit 0 dead, bit 1 news. Integers are big-endian. `epoch` identifies the sender's boot and `seq`
//! counts its datagrams within that boot; together they let a receiver drop
//! replays (see `replay`). The tag is checked before any field is trusted.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub const VERSION: u8 = 1;
pub const TAG_LEN: usize = 32;
/// Kubernetes node names are at most 253 bytes; one length byte suffices.
pub const MAX_NAME_LEN: usize = 255;

type HmacSha256 = Hmac<Sha256>;

/// The shared secret every speaker authenticates datagrams with, read from
/// a Kubernetes Secret by the caller.
#[derive(Clone)]
pub struct Key(HmacSha256);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn new(secret: &[u8]) -> Result<Key, WireError> {
        // Short keys make the MAC guessable; 16 bytes is the HMAC floor for
        // a 128-bit security level.
        if secret.len() < 16 {
            return Err(WireError::ShortKey(secret.len()));
        }
        HmacSha256::new_from_slice(secret)
            .map(Key)
            .map_err(|_| WireError::ShortKey(secret.len()))
    }

    fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.0.clone();
        mac.update(data);
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }

    fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.0.clone();
        mac.update(data);
        // Constant-time comparison, so the tag cannot be found byte by byte.
        mac.verify_slice(tag).is_ok()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("datagram truncated")]
    Truncated,
    #[error("authentication tag does not match")]
    BadMac,
    #[error("protocol version {0} is not supported")]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("unknown member state {0}")]
    State(u8),
    #[error("node name is not UTF-8")]
    Name,
    #[error("node name of {0} bytes is longer than {MAX_NAME_LEN}")]
    NameTooLong(usize),
    #[error("{0} bytes after the last field")]
    Trailing(usize),
    #[error("key of {0} bytes is shorter than 16")]
    ShortKey(usize),
}

/// What one speaker claims about a member: alive or dead at an incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub node: String,
    pub incarnation: u64,
    pub dead: bool,
    /// Set on fresh changes being disseminated (pushes and piggybacked
    /// rumors), clear on anti-entropy repeats and claims sent for checking;
    /// receivers act on news at once and verify the rest.
    pub news: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// "Are you alive?" from a monitor; answered with `Ack`.
    Probe,
    Ack,
    /// The sender has missed enough probes of `target` at `incarnation`.
    Suspect {
        target: String,
        incarnation: u64,
    },
    /// Carries only updates.
    Gossip,
}

impl Body {
    fn kind(&self) -> u8 {
        match self {
            Body::Probe => 1,
            Body::Ack => 2,
            Body::Suspect { .. } => 3,
            Body::Gossip => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub sender: String,
    pub epoch: u64,
    pub seq: u64,
    /// The sender's own incarnation.
    pub incarnation: u64,
    pub body: Body,
    pub updates: Vec<Update>,
}

fn put_name(out: &mut Vec<u8>, name: &str) -> Result<(), WireError> {
    let len = u8::try_from(name.len()).map_err(|_| WireError::NameTooLong(name.len()))?;
    out.push(len);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

/// Encoded size of one update, for packing datagrams under a byte budget.
pub fn update_len(node: &str) -> usize {
    1 + node.len() + 8 + 1
}

impl Message {
    pub fn encode(&self, key: &Key) -> Result<Vec<u8>, WireError> {
        let mut out = Vec::with_capacity(64 + self.updates.len() * 24);
        out.push(VERSION);
        out.push(self.body.kind());
        put_name(&mut out, &self.sender)?;
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        if let Body::Suspect {
            target,
            incarnation,
        } = &self.body
        {
            put_name(&mut out, target)?;
            out.extend_from_slice(&incarnation.to_be_bytes());
        }
        let count = u8::try_from(self.updates.len()).map_err(|_| WireError::Trailing(0))?;
        out.push(count);
        for u in &self.updates {
            put_name(&mut out, &u.node)?;
            out.extend_from_slice(&u.incarnation.to_be_bytes());
            out.push(u8::from(u.dead) | (u8::from(u.news) << 1));
        }
        let tag = key.tag(&out);
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Verifies the tag, then parses. Nothing is parsed from a datagram
    /// whose tag is wrong, so a forger learns nothing from the error kind.
    pub fn decode(buf: &[u8], key: &Key) -> Result<Message, WireError> {
        let split = buf.len().checked_sub(TAG_LEN).ok_or(WireError::Truncated)?;
        let (data, tag) = buf.split_at(split);
        if !key.verify(data, tag) {
            return Err(WireError::BadMac);
        }
        let mut r = Reader { buf: data, at: 0 };
        let version = r.u8()?;
        if version != VERSION {
            return Err(WireError::Version(version));
        }
        let kind = r.u8()?;
        let sender = r.name()?;
        let epoch = r.u64()?;
        let seq = r.u64()?;
        let incarnation = r.u64()?;
        let body = match kind {
            1 => Body::Probe,
            2 => Body::Ack,
            3 => Body::Suspect {
                target: r.name()?,
                incarnation: r.u64()?,
            },
            4 => Body::Gossip,
            other => return Err(WireError::Kind(other)),
        };
        let count = r.u8()?;
        let mut updates = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let node = r.name()?;
            let incarnation = r.u64()?;
            let state = r.u8()?;
            if state > 3 {
                return Err(WireError::State(state));
            }
            updates.push(Update {
                node,
                incarnation,
                dead: state & 1 != 0,
                news: state & 2 != 0,
            });
        }
        if r.at != data.len() {
            return Err(WireError::Trailing(data.len() - r.at));
        }
        Ok(Message {
            sender,
            epoch,
            seq,
            incarnation,
            body,
            updates,
        })
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Result<&[u8], WireError> {
        let b = self
            .buf
            .get(self.at..self.at + n)
            .ok_or(WireError::Truncated)?;
        self.at += n;
        Ok(b)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_be_bytes(b))
    }
    fn name(&mut self) -> Result<String, WireError> {
        let len = usize::from(self.u8()?);
        String::from_utf8(self.bytes(len)?.to_vec()).map_err(|_| WireError::Name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn sample() -> Message {
        Message {
            sender: "node-a".into(),
            epoch: 1_700_000_000_000,
            seq: 42,
            incarnation: 3,
            body: Body::Suspect {
                target: "node-b".into(),
                incarnation: 7,
            },
            updates: vec![
                Update {
                    node: "node-c".into(),
                    incarnation: 1,
                    dead: true,
                    news: true,
                },
                Update {
                    node: "node-d".into(),
                    incarnation: 0,
                    dead: false,
                    news: false,
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let bytes = m.encode(&key()).unwrap();
        assert_eq!(Message::decode(&bytes, &key()).unwrap(), m);
    }

    // The layout is a protocol between speaker versions; pin it. The tag was
    // computed with Python's hmac module over the same 42 leading bytes.
    #[test]
    fn layout_is_pinned() {
        let m = Message {
            sender: "n1".into(),
            epoch: 1,
            seq: 2,
            incarnation: 3,
            body: Body::Probe,
            updates: vec![Update {
                node: "n2".into(),
                incarnation: 4,
                dead: true,
                news: false,
            }],
        };
        let bytes = m.encode(&key()).unwrap();
        let head = [
            1, 1, 2, b'n', b'1', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0,
            0, 3, 1, 2, b'n', b'2', 0, 0, 0, 0, 0, 0, 0, 4, 1,
        ];
        assert_eq!(&bytes[..head.len()], &head);
        assert_eq!(bytes.len(), head.len() + TAG_LEN);
        assert_eq!(hex(&bytes[head.len()..]), PINNED_TAG);
    }

    const PINNED_TAG: &str = "79021c6cb38edd02f0156293aaf4a6284f8a64085a2f838c7ffb3e657a8c19d4";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn wrong_key_or_any_flipped_bit_fails_authentication() {
        let bytes = sample().encode(&key()).unwrap();
        let other = Key::new(b"another key of sufficient length").unwrap();
        assert_eq!(Message::decode(&bytes, &other), Err(WireError::BadMac));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert_eq!(
                Message::decode(&b, &key()),
                Err(WireError::BadMac),
                "byte {i}"
            );
        }
    }

    #[test]
    fn unknown_update_flags_are_refused() {
        let mut m = sample();
        m.body = Body::Gossip;
        let mut bytes = m.encode(&key()).unwrap();
        // The last update's flags byte sits just before the tag.
        let at = bytes.len() - TAG_LEN - 1;
        bytes[at] = 4;
        let data = bytes[..bytes.len() - TAG_LEN].to_vec();
        bytes.truncate(data.len());
        bytes.extend_from_slice(&key().tag(&data));
        assert_eq!(Message::decode(&bytes, &key()), Err(WireError::State(4)));
    }

    #[test]
    fn short_key_is_refused() {
        assert_eq!(Key::new(b"short").unwrap_err(), WireError::ShortKey(5));
    }

    #[test]
    fn long_name_is_refused() {
        let mut m = sample();
        m.sender = "x".repeat(256);
        assert_eq!(m.encode(&key()), Err(WireError::NameTooLong(256)));
    }

    proptest! {
        #[test]
        fn random_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert!(Message::decode(&bytes, &key()).is_err());
        }

        // Authenticated garbage (a key holder sending nonsense) must still
        // only produce errors.
        #[test]
        fn authenticated_garbage_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut bytes = body.clone();
            bytes.extend_from_slice(&key().tag(&body));
            let _ = Message::decode(&bytes, &key());
        }
    }
}
