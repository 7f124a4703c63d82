//! Provider answers compressed although the gateway asked for `accept-encoding:
//! identity` (a proxy in between, a provider that ignores it): the bytes pass to
//! the client as they came, and are decoded here as they pass into the usage scan,
//! within a bound on the decoded size, so a small compressed body cannot make the
//! gateway unfold gigabytes. Pure.

use std::io::Write;

/// A `content-encoding` the gateway can decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Deflate,
    Brotli,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("content-encoding {0:?} is not one the gateway decodes (gzip, deflate, br)")]
    Unknown(String),
    #[error("the {0:?} answer does not decode: {1}")]
    Corrupt(Encoding, #[source] std::io::Error),
    #[error("the {0:?} answer decodes to more than {1} bytes")]
    TooLarge(Encoding, u64),
}

impl Encoding {
    /// The encoding a `content-encoding` value names; `Ok(None)` for identity or none.
    pub fn of(header: Option<&str>) -> Result<Option<Self>, DecodeError> {
        match header.map(|h| h.trim().to_ascii_lowercase()).as_deref() {
            None | Some("" | "identity") => Ok(None),
            Some("gzip" | "x-gzip") => Ok(Some(Encoding::Gzip)),
            Some("deflate") => Ok(Some(Encoding::Deflate)),
            Some("br") => Ok(Some(Encoding::Brotli)),
            Some(other) => Err(DecodeError::Unknown(other.to_string())),
        }
    }
}

/// Decodes an answer as its compressed bytes are written to it, writing the plain
/// bytes into `W` (the usage scan), at most `limit` of them.
pub struct Decoder<W: Write> {
    encoding: Encoding,
    inner: Inner<W>,
}

enum Inner<W: Write> {
    Gzip(flate2::write::MultiGzDecoder<Capped<W>>),
    // HTTP's "deflate" is zlib-wrapped (RFC 9110 section 8.4.1.2).
    Deflate(flate2::write::ZlibDecoder<Capped<W>>),
    Brotli(Box<brotli::DecompressorWriter<Capped<W>>>),
}

/// A writer that refuses more than `left` bytes.
struct Capped<W> {
    out: W,
    left: u64,
    limit: u64,
    /// It refused bytes past the limit.
    over: bool,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if bytes.len() as u64 > self.left {
            self.over = true;
            return Err(std::io::Error::other(format!("decodes to more than {} bytes", self.limit)));
        }
        self.left -= bytes.len() as u64;
        self.out.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl<W: Write> Decoder<W> {
    pub fn new(encoding: Encoding, out: W, limit: u64) -> Self {
        let capped = Capped { out, left: limit, limit, over: false };
        let inner = match encoding {
            Encoding::Gzip => Inner::Gzip(flate2::write::MultiGzDecoder::new(capped)),
            Encoding::Deflate => Inner::Deflate(flate2::write::ZlibDecoder::new(capped)),
            Encoding::Brotli => Inner::Brotli(Box::new(brotli::DecompressorWriter::new(capped, 4096))),
        };
        Self { encoding, inner }
    }

    /// Decodes the next compressed bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let written = match &mut self.inner {
            Inner::Gzip(d) => d.write_all(bytes),
            Inner::Deflate(d) => d.write_all(bytes),
            Inner::Brotli(d) => d.write_all(bytes),
        };
        written.map_err(|e| self.error(e))
    }

    /// Where the plain bytes go.
    pub fn get_ref(&self) -> &W {
        &self.capped().out
    }

    /// Decodes what is left and returns where the plain bytes went.
    pub fn finish(self) -> Result<W, DecodeError> {
        let encoding = self.encoding;
        let error = |e: std::io::Error| DecodeError::Corrupt(encoding, e);
        let capped = match self.inner {
            Inner::Gzip(d) => d.finish().map_err(error)?,
            Inner::Deflate(d) => d.finish().map_err(error)?,
            Inner::Brotli(mut d) => {
                d.close().map_err(error)?;
                (*d).into_inner().map_err(|_| error(std::io::Error::other("the brotli stream does not end")))?
            }
        };
        Ok(capped.out)
    }

    fn error(&self, e: std::io::Error) -> DecodeError {
        let capped = self.capped();
        match capped.over {
            true => DecodeError::TooLarge(self.encoding, capped.limit),
            false => DecodeError::Corrupt(self.encoding, e),
        }
    }

    fn capped(&self) -> &Capped<W> {
        match &self.inner {
            Inner::Gzip(d) => d.get_ref(),
            Inner::Deflate(d) => d.get_ref(),
            Inner::Brotli(d) => d.get_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const JSON: &[u8] = br#"{"model":"gpt-4o-mini","usage":{"prompt_tokens":9,"completion_tokens":7}}"#;

    /// `bytes` decoded in chunks of 5 bytes, at most `limit` of output.
    fn decode(encoding: Encoding, bytes: &[u8], limit: u64) -> Result<Vec<u8>, DecodeError> {
        let mut decoder = Decoder::new(encoding, Vec::new(), limit);
        for chunk in bytes.chunks(5) {
            decoder.write(chunk)?;
        }
        decoder.finish()
    }

    #[test]
    fn gzip_deflate_and_brotli_answers_decode_as_they_pass() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(JSON).unwrap();
        assert_eq!(decode(Encoding::Gzip, &gz.finish().unwrap(), 1024).unwrap(), JSON);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(JSON).unwrap();
        assert_eq!(decode(Encoding::Deflate, &zlib.finish().unwrap(), 1024).unwrap(), JSON);
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22).write_all(JSON).unwrap();
        assert_eq!(decode(Encoding::Brotli, &br, 1024).unwrap(), JSON);
    }

    #[test]
    fn headers_name_the_encoding_and_bombs_and_garbage_are_refused() {
        assert_eq!(Encoding::of(None).unwrap(), None);
        assert_eq!(Encoding::of(Some("identity")).unwrap(), None);
        assert_eq!(Encoding::of(Some(" GZIP ")).unwrap(), Some(Encoding::Gzip));
        assert_eq!(Encoding::of(Some("br")).unwrap(), Some(Encoding::Brotli));
        assert!(matches!(Encoding::of(Some("zstd")), Err(DecodeError::Unknown(_))));
        // A megabyte of zeros compresses to about a kilobyte: refused past the bound.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 1 << 20]).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 4096);
        assert!(matches!(decode(Encoding::Gzip, &bomb, 64 * 1024), Err(DecodeError::TooLarge(..))));
        assert!(matches!(decode(Encoding::Gzip, b"not gzip at all", 1024), Err(DecodeError::Corrupt(..))));
    }
}
