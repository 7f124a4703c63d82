//! Provider answers compressed although the gateway asked for `accept-encoding:
//! identity` (a proxy in between, a provider that ignores it): the bytes pass to
//! the client as they came, and the copy the usage is read from is decoded here,
//! within the same bound as the copy itself, so a small compressed body cannot
//! unfold into gigabytes. Pure.

use std::io::Read;

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
    TooLarge(Encoding, usize),
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

    /// `bytes` decoded, at most `limit` bytes of output.
    pub fn decode(self, bytes: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
        let reader: Box<dyn Read + '_> = match self {
            Encoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
            // HTTP's "deflate" is zlib-wrapped (RFC 9110 section 8.4.1.2).
            Encoding::Deflate => Box::new(flate2::read::ZlibDecoder::new(bytes)),
            Encoding::Brotli => Box::new(brotli::Decompressor::new(bytes, 4096)),
        };
        let mut out = Vec::new();
        reader.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| DecodeError::Corrupt(self, e))?;
        if out.len() > limit {
            return Err(DecodeError::TooLarge(self, limit));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const JSON: &[u8] = br#"{"model":"gpt-4o-mini","usage":{"prompt_tokens":9,"completion_tokens":7}}"#;

    #[test]
    fn gzip_deflate_and_brotli_answers_decode() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(JSON).unwrap();
        assert_eq!(Encoding::Gzip.decode(&gz.finish().unwrap(), 1024).unwrap(), JSON);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(JSON).unwrap();
        assert_eq!(Encoding::Deflate.decode(&zlib.finish().unwrap(), 1024).unwrap(), JSON);
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22).write_all(JSON).unwrap();
        assert_eq!(Encoding::Brotli.decode(&br, 1024).unwrap(), JSON);
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
        assert!(matches!(Encoding::Gzip.decode(&bomb, 64 * 1024), Err(DecodeError::TooLarge(..))));
        assert!(matches!(Encoding::Gzip.decode(b"not gzip at all", 1024), Err(DecodeError::Corrupt(..))));
    }
}
