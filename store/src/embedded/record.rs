//! What the MVCC core and the write-ahead log exchange: the durable
//! [`Record`] of a state change (with its payload encoding, described in
//! the parent module) and the [`Revision`] of events published once it is
//! durable. Both `mvcc` and `wal` import it; neither imports the other.

use drover_proto::etcd::mvccpb::{Event, KeyValue};

/// One durable change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// The writes of one revision (Put, DeleteRange, Txn, lease expiry).
    Write { rev: i64, muts: Vec<Mutation> },
    /// A lease was granted with `ttl` seconds.
    LeaseGrant { id: i64, ttl: i64 },
    /// A lease was revoked (or expired); `rev` is 0 when it had no keys.
    LeaseRevoke {
        id: i64,
        rev: i64,
        muts: Vec<Mutation>,
    },
    /// History below `rev` was dropped.
    Compact { rev: i64 },
    /// The first record of a log that follows snapshot generation `gen`
    /// (logs written before snapshots existed have none: generation 0).
    LogStart { gen: u64 },
}

/// One key change inside a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mutation {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Delete {
        key: Vec<u8>,
    },
}

/// The events written at one revision, with `prev_kv` always filled so
/// that historical reads can undo them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Revision {
    pub rev: i64,
    pub events: Vec<Event>,
}

impl Revision {
    /// Key and value bytes held, for the history budget.
    pub(crate) fn bytes(&self) -> usize {
        let kv = |kv: &Option<KeyValue>| kv.as_ref().map_or(0, |kv| kv.key.len() + kv.value.len());
        self.events
            .iter()
            .map(|e| 64 + kv(&e.kv) + kv(&e.prev_kv))
            .sum()
    }
}

/// Why a record payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The first byte names no record type.
    #[error("unknown record tag {0}")]
    UnknownRecordTag(u8),
    /// A mutation starts with a byte that names no mutation type.
    #[error("unknown mutation tag {0}")]
    UnknownMutationTag(u8),
    /// A field runs past the end of the payload.
    #[error("truncated field at payload byte {offset}")]
    Truncated {
        /// Where the field starts in the payload.
        offset: usize,
    },
    /// The payload goes on after a complete record.
    #[error("{0} trailing bytes")]
    TrailingBytes(usize),
}

impl Record {
    /// The payload bytes (without the length/CRC frame).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        match self {
            Record::Write { rev, muts } => {
                b.push(1);
                b.extend_from_slice(&rev.to_le_bytes());
                put_muts(&mut b, muts);
            }
            Record::LeaseGrant { id, ttl } => {
                b.push(2);
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&ttl.to_le_bytes());
            }
            Record::LeaseRevoke { id, rev, muts } => {
                b.push(3);
                b.extend_from_slice(&id.to_le_bytes());
                b.extend_from_slice(&rev.to_le_bytes());
                put_muts(&mut b, muts);
            }
            Record::Compact { rev } => {
                b.push(4);
                b.extend_from_slice(&rev.to_le_bytes());
            }
            Record::LogStart { gen } => {
                b.push(5);
                b.extend_from_slice(&gen.to_le_bytes());
            }
        }
        b
    }

    /// Parses a payload; the error says what was malformed.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader { buf, pos: 0 };
        let rec = match r.u8()? {
            1 => Record::Write {
                rev: r.i64()?,
                muts: r.muts()?,
            },
            2 => Record::LeaseGrant {
                id: r.i64()?,
                ttl: r.i64()?,
            },
            3 => Record::LeaseRevoke {
                id: r.i64()?,
                rev: r.i64()?,
                muts: r.muts()?,
            },
            4 => Record::Compact { rev: r.i64()? },
            5 => Record::LogStart { gen: r.u64()? },
            t => return Err(DecodeError::UnknownRecordTag(t)),
        };
        if r.pos != buf.len() {
            return Err(DecodeError::TrailingBytes(buf.len() - r.pos));
        }
        Ok(rec)
    }
}

pub(crate) fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    // Keys and values are bounded by the 1.5 MiB request limit.
    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    b.extend_from_slice(v);
}

fn put_muts(b: &mut Vec<u8>, muts: &[Mutation]) {
    b.extend_from_slice(&(muts.len() as u32).to_le_bytes());
    for m in muts {
        match m {
            Mutation::Put { key, value, lease } => {
                b.push(1);
                put_bytes(b, key);
                put_bytes(b, value);
                b.extend_from_slice(&lease.to_le_bytes());
            }
            Mutation::Delete { key } => {
                b.push(2);
                put_bytes(b, key);
            }
        }
    }
}

/// A cursor over an encoded payload; every read names the offset of a
/// field that runs past the end.
pub(crate) struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    /// A length-prefixed byte string, borrowed.
    pub(crate) fn slice(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or(DecodeError::Truncated { offset: self.pos })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(a))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn muts(&mut self) -> Result<Vec<Mutation>, DecodeError> {
        let n = self.u32()?;
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(match self.u8()? {
                1 => Mutation::Put {
                    key: self.bytes()?,
                    value: self.bytes()?,
                    lease: self.i64()?,
                },
                2 => Mutation::Delete { key: self.bytes()? },
                t => return Err(DecodeError::UnknownMutationTag(t)),
            });
        }
        Ok(out)
    }
}
