//! The chunked transfer coding (RFC 9112 §7.1), read strictly and written again in one
//! canonical form: sizes in lowercase hex, no extensions, no trailers. What the next hop gets
//! can be read one way only, whatever the sender wrote.

/// What the decoder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The body chunked again, canonically (for HTTP/1.1 peers).
    Chunked,
    /// The data alone (for an HTTP/1.0 client, whose response then ends with the connection).
    Data,
}

/// Why a chunked body is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// A chunk size that is not hex, or too large.
    #[error("invalid chunk size")]
    Size,
    /// A line that does not end in CRLF where one must.
    #[error("a chunk line does not end in CRLF")]
    LineEnd,
    /// Trailer fields longer than the decoder keeps reading.
    #[error("the trailer section is too large")]
    Trailer,
}

/// Longest chunk-size line, extensions included.
const MAX_SIZE_LINE: usize = 4096;
/// Longest trailer section read (and dropped).
const MAX_TRAILER: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size (`digits` so far).
    Size { size: u64, digits: u8 },
    /// After the size: extensions or white space, up to CR.
    Ext { size: u64 },
    /// CR seen after the size line; LF must follow.
    SizeLf { size: u64 },
    /// `left` data bytes of the current chunk to go.
    Data { left: u64 },
    /// After the data: CR must follow.
    DataCr,
    /// After the data's CR: LF must follow.
    DataLf,
    /// In the trailer section, at the start of a line (`read` bytes of trailers so far).
    TrailerStart { read: usize },
    /// Inside a trailer line.
    TrailerLine { read: usize },
    /// CR seen inside a trailer line.
    TrailerLf { read: usize, empty: bool },
    /// The body has ended.
    Done,
}

/// A chunked body being read.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    output: Output,
    line: usize,
}

impl Decoder {
    /// A decoder at the start of a body.
    pub fn new(output: Output) -> Self {
        Self { state: State::Size { size: 0, digits: 0 }, output, line: 0 }
    }

    /// Whether the last chunk and the trailers have been read.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads `input`, appending what the next hop gets to `out`; returns how many bytes of
    /// `input` belong to the body (fewer than `input.len()` only once it has ended).
    ///
    /// # Errors
    /// The body is not valid chunked coding.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Size { size, digits } => {
                    self.line += 1;
                    if let Some(d) = (b as char).to_digit(16) {
                        if digits >= 15 {
                            return Err(ChunkError::Size);
                        }
                        State::Size { size: size << 4 | u64::from(d), digits: digits + 1 }
                    } else if digits == 0 {
                        return Err(ChunkError::Size);
                    } else if b == b'\r' {
                        State::SizeLf { size }
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        State::Ext { size }
                    } else {
                        return Err(ChunkError::Size);
                    }
                }
                State::Ext { size } => {
                    self.line += 1;
                    if self.line > MAX_SIZE_LINE {
                        return Err(ChunkError::Size);
                    }
                    match b {
                        b'\r' => State::SizeLf { size },
                        b'\n' | 0 => return Err(ChunkError::LineEnd),
                        _ => State::Ext { size },
                    }
                }
                State::SizeLf { size } => {
                    if b != b'\n' {
                        return Err(ChunkError::LineEnd);
                    }
                    self.line = 0;
                    if size == 0 {
                        State::TrailerStart { read: 0 }
                    } else {
                        if self.output == Output::Chunked {
                            let _ = std::io::Write::write_fmt(out, format_args!("{size:x}\r\n"));
                        }
                        State::Data { left: size }
                    }
                }
                State::Data { left } => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 { State::DataCr } else { State::Data { left } };
                    continue;
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => {
                    if self.output == Output::Chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                    State::Size { size: 0, digits: 0 }
                }
                State::DataCr | State::DataLf => return Err(ChunkError::LineEnd),
                State::TrailerStart { read } | State::TrailerLine { read } if read >= MAX_TRAILER => {
                    return Err(ChunkError::Trailer);
                }
                State::TrailerStart { read } => match b {
                    b'\r' => State::TrailerLf { read: read + 1, empty: true },
                    b'\n' => return Err(ChunkError::LineEnd),
                    _ => State::TrailerLine { read: read + 1 },
                },
                State::TrailerLine { read } => match b {
                    b'\r' => State::TrailerLf { read: read + 1, empty: false },
                    b'\n' => return Err(ChunkError::LineEnd),
                    _ => State::TrailerLine { read: read + 1 },
                },
                State::TrailerLf { read, empty } => {
                    if b != b'\n' {
                        return Err(ChunkError::LineEnd);
                    }
                    if empty {
                        if self.output == Output::Chunked {
                            out.extend_from_slice(b"0\r\n\r\n");
                        }
                        i += 1;
                        self.state = State::Done;
                        return Ok(i);
                    }
                    State::TrailerStart { read: read + 1 }
                }
            };
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(input: &[u8], output: Output) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = Decoder::new(output);
        let mut out = Vec::new();
        let n = d.feed(input, &mut out)?;
        Ok((out, n, d.done()))
    }

    #[test]
    fn chunks_are_written_again_canonically_and_the_end_is_found() {
        let (out, n, done) =
            decode(b"3;name=value\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET /next", Output::Chunked).unwrap();
        assert_eq!(out, b"3\r\nabc\r\na\r\n0123456789\r\n0\r\n\r\n");
        assert_eq!((n, done), (47, true), "the bytes after the body are not the body's");
        let (data, _, _) = decode(b"3\r\nabc\r\n0\r\n\r\n", Output::Data).unwrap();
        assert_eq!(data, b"abc");
    }

    #[test]
    fn a_body_split_anywhere_decodes_the_same() {
        let body = b"5\r\nhello\r\n1c\r\n, a longer second chunk!!!!!\r\n0\r\n\r\n";
        let whole = decode(body, Output::Chunked).unwrap().0;
        for cut in 0..body.len() {
            let mut d = Decoder::new(Output::Chunked);
            let mut out = Vec::new();
            let a = d.feed(&body[..cut], &mut out).unwrap();
            let b = d.feed(&body[cut..], &mut out).unwrap();
            assert_eq!((a + b, &out, d.done()), (body.len(), &whole, true), "cut at {cut}");
        }
    }

    #[test]
    fn invalid_sizes_and_line_ends_are_refused() {
        for (bad, why) in [
            (&b"zz\r\nabc\r\n"[..], ChunkError::Size),
            (b"fffffffffffffffffff\r\n", ChunkError::Size),
            (b"\r\n", ChunkError::Size),
            (b"-1\r\n", ChunkError::Size),
            (b"3\nabc\n0\n\n", ChunkError::Size),
            (b"3\r\nabcd\r\n", ChunkError::LineEnd),
            (b"3\r\nabc\n0\r\n\r\n", ChunkError::LineEnd),
            (b"3;x\nabc", ChunkError::LineEnd),
            (b"0\r\nX: 1\n\r\n", ChunkError::LineEnd),
        ] {
            assert_eq!(decode(bad, Output::Chunked).map(|_| ()), Err(why), "{:?}", String::from_utf8_lossy(bad));
        }
        let long_trailer = format!("0\r\nX: {}\r\n\r\n", "a".repeat(MAX_TRAILER));
        assert_eq!(decode(long_trailer.as_bytes(), Output::Chunked).map(|_| ()), Err(ChunkError::Trailer));
    }

    #[test]
    fn the_largest_sizes_fit() {
        let (out, _, done) = decode(b"fffffffffffffff\r\nab", Output::Chunked).unwrap();
        assert!(!done);
        assert_eq!(out, b"fffffffffffffff\r\nab");
    }
}
