//! The TransportMessage on the wire: encoding straight into one buffer per message (no copy of
//! the record beyond into that buffer, no intermediate structs), zero-copy decoding.
//!
//! Byte-identical to the prost encoding of `connector.v1.TransportMessage` (tested below).

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

use crate::proto::TransportMessage;

/// Field 1 (timestamp), wire type varint.
const TIMESTAMP_TAG: u8 = 0x08;
/// Field 3 (payload), wire type length-delimited.
const PAYLOAD_TAG: u8 = 0x1a;

/// A TransportMessage that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a TransportMessage: {0}")]
pub struct DecodeError(String);

/// The number of bytes a varint takes.
fn varint_len(value: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// The encoded size of one record inside a message (tag, length, bytes).
pub fn record_encoded_len(record_len: usize) -> usize {
    1 + varint_len(record_len as u64) + record_len
}

/// The encoded size of the message header (the timestamp field).
pub fn header_encoded_len(timestamp_nanos: i64) -> usize {
    if timestamp_nanos == 0 {
        0
    } else {
        1 + varint_len(timestamp_nanos as u64)
    }
}

/// Encodes a TransportMessage holding `records` stamped `timestamp_nanos`.
pub fn encode(timestamp_nanos: i64, records: &[Bytes]) -> Bytes {
    let len = header_encoded_len(timestamp_nanos)
        + records
            .iter()
            .map(|r| record_encoded_len(r.len()))
            .sum::<usize>();
    let mut buf = BytesMut::with_capacity(len);
    if timestamp_nanos != 0 {
        buf.put_u8(TIMESTAMP_TAG);
        put_varint(&mut buf, timestamp_nanos as u64);
    }
    for record in records {
        buf.put_u8(PAYLOAD_TAG);
        put_varint(&mut buf, record.len() as u64);
        buf.put_slice(record);
    }
    buf.freeze()
}

/// Decodes a TransportMessage; the records are slices of `bytes` (no copy).
pub fn decode(bytes: Bytes) -> Result<(i64, Vec<Bytes>), DecodeError> {
    let message = TransportMessage::decode(bytes).map_err(|e| DecodeError(e.to_string()))?;
    Ok((message.timestamp, message.payload))
}

/// Now, as Unix epoch nanoseconds.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Splits records into TransportMessages of at most `max_records` records and `max_bytes`
/// encoded bytes each (a single record larger than `max_bytes` travels alone).
pub fn encode_batches(
    timestamp_nanos: i64,
    records: &[Bytes],
    max_records: usize,
    max_bytes: usize,
) -> Vec<Bytes> {
    let max_records = max_records.max(1);
    let header = header_encoded_len(timestamp_nanos);
    let mut messages = Vec::with_capacity(records.len().div_ceil(max_records));
    let mut start = 0;
    while start < records.len() {
        let mut end = start;
        let mut size = header;
        while end < records.len() && end - start < max_records {
            let add = record_encoded_len(records[end].len());
            if end > start && size + add > max_bytes {
                break;
            }
            size += add;
            end += 1;
        }
        messages.push(encode(timestamp_nanos, &records[start..end]));
        start = end;
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prost_encode(timestamp: i64, records: &[Bytes]) -> Vec<u8> {
        TransportMessage {
            timestamp,
            payload: records.to_vec(),
        }
        .encode_to_vec()
    }

    #[test]
    fn encoding_is_byte_identical_to_prost() {
        let big = Bytes::from(vec![7u8; 70_000]);
        let cases: Vec<(i64, Vec<Bytes>)> = vec![
            (0, vec![]),
            (1, vec![Bytes::from_static(b"a")]),
            (
                1_700_000_000_123_456_789,
                vec![Bytes::new(), Bytes::from_static(b"hello"), big.clone()],
            ),
            (
                -5,
                vec![Bytes::from(vec![0u8; 127]), Bytes::from(vec![1u8; 128])],
            ),
            (i64::MAX, vec![big]),
        ];
        for (ts, records) in cases {
            assert_eq!(
                encode(ts, &records).as_ref(),
                prost_encode(ts, &records).as_slice(),
                "ts {ts}"
            );
        }
    }

    #[test]
    fn decode_round_trips_and_refuses_garbage() {
        let records = vec![Bytes::from_static(b"one"), Bytes::from_static(b"two")];
        let (ts, decoded) = decode(encode(42, &records)).unwrap();
        assert_eq!((ts, decoded), (42, records));
        assert!(decode(Bytes::from_static(&[0x1a, 0xff, 0xff])).is_err());
    }

    #[test]
    fn batches_respect_record_and_byte_limits() {
        let records: Vec<Bytes> = (0..10).map(|i| Bytes::from(vec![i as u8; 100])).collect();
        let one_each = encode_batches(5, &records, 1, 1 << 20);
        assert_eq!(one_each.len(), 10);
        let by_count = encode_batches(5, &records, 4, 1 << 20);
        assert_eq!(by_count.len(), 3);
        let by_bytes = encode_batches(5, &records, 100, 350);
        assert!(by_bytes.iter().all(|m| m.len() <= 350));
        let all: Vec<Bytes> = by_bytes
            .into_iter()
            .flat_map(|m| decode(m).unwrap().1)
            .collect();
        assert_eq!(all, records);
        let huge = vec![Bytes::from(vec![0u8; 1000])];
        assert_eq!(encode_batches(5, &huge, 10, 100).len(), 1);
    }
}
