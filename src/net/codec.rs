//! Little-endian primitives of the wire format: a bounds-checked [`Reader`] over untrusted bytes
//! and a [`Writer`] appending to a `Vec<u8>`. Every read past the end is a
//! `DecodeError::TooShort`, every impossible value a `DecodeError::BadField`; nothing panics.
//!
//! Encodings shared by every message (`docs/format.md`, "Wire protocol"):
//! - `bool`: one byte, 0 or 1 (anything else is rejected, so decoding is canonical);
//! - `Option<T>`: a presence byte (0 or 1), then `T` if present;
//! - `bytes`: `len u32 | len bytes`; `string`: the same, UTF-8;
//! - a list: `count u32 | count elements` (no capacity is reserved from an untrusted count).
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::format::DecodeError;

/// A cursor over untrusted bytes.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Fails unless every byte was read (`BadField { field: "trailing bytes" }`).
    pub fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::BadField {
                field: "trailing bytes",
                value: n as i64,
            }),
        }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.buf.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(DecodeError::TooShort {
                need: (self.pos as u64).saturating_add(n as u64),
                have: self.buf.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        <[u8; N]>::try_from(s).map_err(|_| DecodeError::TooShort {
            need: N as u64,
            have: s.len() as u64,
        })
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(u8::from_le_bytes(self.array()?))
    }
    pub fn i8(&mut self) -> Result<i8, DecodeError> {
        Ok(i8::from_le_bytes(self.array()?))
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A byte that must be 0 or 1.
    pub fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(DecodeError::BadField {
                field,
                value: i64::from(v),
            }),
        }
    }

    /// A presence byte, then `read` if present.
    pub fn option<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.bool(field)? {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        self.take(len as usize)
    }

    pub fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|e| DecodeError::BadField {
            field,
            value: e.utf8_error().valid_up_to() as i64,
        })
    }

    /// `count u32`, then `count` elements read by `read`.
    pub fn list<T>(
        &mut self,
        mut read: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.u32()?;
        let mut out = Vec::new();
        for _ in 0..count {
            out.push(read(self)?);
        }
        Ok(out)
    }

    /// `family u8 (4 or 6) | address (4 or 16 bytes) | port u16`.
    pub fn socket_addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            f => {
                return Err(DecodeError::BadField {
                    field: "address family",
                    value: i64::from(f),
                })
            }
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
}

/// Appends little-endian fields to a buffer.
#[derive(Debug, Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn i8(&mut self, v: i8) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i16(&mut self, v: i16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    pub fn option<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        self.bool(v.is_some());
        if let Some(v) = v {
            write(self, v);
        }
    }

    /// `len u32 | bytes`. A slice longer than `u32::MAX` cannot be framed anyway (frames are
    /// limited far below that), so its length saturates and the receiver rejects the frame.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(b);
    }

    pub fn string(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn list<T>(&mut self, items: &[T], mut write: impl FnMut(&mut Self, &T)) {
        self.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
        for item in items {
            write(self, item);
        }
    }

    pub fn socket_addr(&mut self, addr: SocketAddr) {
        match addr.ip() {
            IpAddr::V4(ip) => {
                self.u8(4);
                self.buf.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.u8(6);
                self.buf.extend_from_slice(&ip.octets());
            }
        }
        self.u16(addr.port());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip_and_reads_past_the_end_fail() {
        let mut w = Writer::default();
        w.u8(7);
        w.i16(-2);
        w.u64(u64::MAX);
        w.option(Some(5u32), |w, v| w.u32(v));
        w.option(None::<u32>, |w, v| w.u32(v));
        w.string("héllo");
        w.list(&[1i64, -1], |w, v| w.i64(*v));
        w.socket_addr("127.0.0.1:7070".parse().unwrap());
        w.socket_addr("[::1]:9".parse().unwrap());
        let bytes = w.buf;
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.i16().unwrap(), -2);
        assert_eq!(r.u64().unwrap(), u64::MAX);
        assert_eq!(r.option("o", |r| r.u32()).unwrap(), Some(5));
        assert_eq!(r.option("o", |r| r.u32()).unwrap(), None);
        assert_eq!(r.string("s").unwrap(), "héllo");
        assert_eq!(r.list(|r| r.i64()).unwrap(), vec![1, -1]);
        assert_eq!(r.socket_addr().unwrap().to_string(), "127.0.0.1:7070");
        assert_eq!(r.socket_addr().unwrap().to_string(), "[::1]:9");
        r.finish().unwrap();
        assert!(matches!(r.u8(), Err(DecodeError::TooShort { .. })));
    }

    #[test]
    fn non_canonical_values_are_rejected() {
        assert!(Reader::new(&[2]).bool("b").is_err());
        assert!(Reader::new(&[5, 0, 0, 0, 0, 0, 0]).socket_addr().is_err());
        // A huge count with no elements fails on the first element, allocating nothing.
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xff])
            .list(|r| r.u64())
            .is_err());
        assert!(Reader::new(&[2, 0, 0, 0, 0xff, 0xfe]).string("s").is_err());
        assert!(Reader::new(&[1]).finish().is_err());
    }
}
