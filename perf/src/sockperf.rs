//! sockperf's message header, enough to answer its clients as `sockperf server` does.
//!
//! ```text
//!  0       8        10       14
//!  | seq   | flags  | length | payload ...     (all big-endian; length = whole message)
//!  flags: 1 = from a client, 2 = pong requested, 4 = warm-up
//! ```
//! A server replies only to messages that request a pong, with the client flag cleared
//! (sockperf 3.7 rejects replies that keep it).

pub const HEADER_LEN: usize = 14;
const FLAGS: std::ops::Range<usize> = 8..10;
const LENGTH: std::ops::Range<usize> = 10..14;
pub const FLAG_CLIENT: u16 = 1;
pub const FLAG_PONG_REQUEST: u16 = 2;
/// Largest message accepted on a stream (sockperf's own maximum message size).
pub const MESSAGE_LEN_MAX: usize = 65_536;

fn flags(msg: &[u8]) -> u16 {
    u16::from_be_bytes([msg[FLAGS.start], msg[FLAGS.start + 1]])
}

/// Turns a request into its reply in place; `false` if no reply is due (no pong requested,
/// or too short to be a sockperf message).
pub fn make_reply(msg: &mut [u8]) -> bool {
    if msg.len() < HEADER_LEN {
        return false;
    }
    let f = flags(msg);
    if f & FLAG_PONG_REQUEST == 0 {
        return false;
    }
    msg[FLAGS].copy_from_slice(&(f & !FLAG_CLIENT).to_be_bytes());
    true
}

/// Length of the message at the start of a stream buffer: `Ok(None)` if the header is not
/// complete yet, `Err(())` if the length field is impossible (the peer is not sockperf).
pub fn stream_message_len(buf: &[u8]) -> Result<Option<usize>, ()> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes(buf[LENGTH].try_into().expect("4-byte range")) as usize;
    if !(HEADER_LEN..=MESSAGE_LEN_MAX).contains(&len) {
        return Err(());
    }
    Ok(Some(len))
}

/// Counts from [`answer_stream`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answered {
    pub requests: u64,
    pub replies: u64,
}

/// Why [`answer_stream`] stopped: the stream is not sockperf, or sending a reply failed.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamError<E> {
    Malformed,
    Reply(E),
}

/// Answers every complete message at the front of a stream buffer through `reply`, then
/// removes them; an incomplete tail stays for the next read.
pub fn answer_stream<E>(
    pending: &mut Vec<u8>,
    mut reply: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<Answered, StreamError<E>> {
    let mut n = Answered::default();
    let mut at = 0;
    let result = loop {
        match stream_message_len(&pending[at..]) {
            Err(()) => break Err(StreamError::Malformed),
            Ok(Some(len)) if pending.len() - at >= len => {
                let msg = &mut pending[at..at + len];
                at += len;
                n.requests += 1;
                if make_reply(msg) {
                    if let Err(e) = reply(msg) {
                        break Err(StreamError::Reply(e));
                    }
                    n.replies += 1;
                }
            }
            Ok(_) => break Ok(n),
        }
    };
    pending.drain(..at);
    result
}

/// Writes a client request: sequence number, flags (client + pong request) and length.
pub fn write_request(msg: &mut [u8], seq: u64) {
    assert!(msg.len() >= HEADER_LEN, "a sockperf message has a 14-byte header");
    msg[..8].copy_from_slice(&seq.to_be_bytes());
    msg[FLAGS].copy_from_slice(&(FLAG_CLIENT | FLAG_PONG_REQUEST).to_be_bytes());
    let len = msg.len() as u32;
    msg[LENGTH].copy_from_slice(&len.to_be_bytes());
}

/// Sequence number of a message.
pub fn seq(msg: &[u8]) -> Option<u64> {
    msg.get(..8).map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// True if the message is a server's reply (client flag clear).
pub fn is_reply(msg: &[u8]) -> bool {
    msg.len() >= HEADER_LEN && flags(msg) & FLAG_CLIENT == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request exactly as sockperf 3.7 sent it on this machine (captured): seq 1,
    /// flags client|pong, length 64.
    const CAPTURED: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 1, 0, 3, 0, 0, 0, 0x40, 0x96, 0x8f];

    #[test]
    fn reply_clears_client_flag_only() {
        let mut m = CAPTURED;
        assert!(make_reply(&mut m));
        assert_eq!(&m[8..10], &[0, 2]);
        assert_eq!(&m[..8], &CAPTURED[..8]);
        assert_eq!(&m[10..], &CAPTURED[10..]);
        assert!(is_reply(&m));
    }

    #[test]
    fn no_reply_without_pong_request_or_header() {
        let mut m = CAPTURED;
        m[9] = 1; // client, no pong request
        assert!(!make_reply(&mut m));
        assert!(!make_reply(&mut [0u8; 13]));
    }

    #[test]
    fn stream_length_checks() {
        assert_eq!(stream_message_len(&CAPTURED[..10]), Ok(None));
        assert_eq!(stream_message_len(&CAPTURED), Ok(Some(64)));
        let mut bad = CAPTURED;
        bad[10..14].copy_from_slice(&5u32.to_be_bytes());
        assert_eq!(stream_message_len(&bad), Err(()));
    }

    #[test]
    fn stream_answers_whole_messages_and_keeps_the_tail() {
        let mut a = [0u8; 20];
        let mut b = [0u8; 30];
        write_request(&mut a, 1);
        write_request(&mut b, 2);
        let mut pending: Vec<u8> = a.iter().chain(&b[..10]).copied().collect();
        let mut seen = Vec::new();
        let n = answer_stream(&mut pending, |m| -> Result<(), ()> {
            seen.push((seq(m), m.len(), is_reply(m)));
            Ok(())
        });
        assert_eq!(
            n,
            Ok(Answered {
                requests: 1,
                replies: 1
            })
        );
        assert_eq!(seen, [(Some(1), 20, true)]);
        assert_eq!(pending.len(), 10, "the partial second message stays");
        pending.extend_from_slice(&b[10..]);
        assert_eq!(
            answer_stream(&mut pending, |_| Ok::<(), ()>(())),
            Ok(Answered {
                requests: 1,
                replies: 1
            })
        );
        assert!(pending.is_empty());
        pending.extend_from_slice(&[0xff; 20]);
        assert_eq!(
            answer_stream(&mut pending, |_| Ok::<(), ()>(())),
            Err(StreamError::Malformed)
        );
    }

    #[test]
    fn request_round_trip() {
        let mut m = [0u8; 64];
        write_request(&mut m, 77);
        assert_eq!(seq(&m), Some(77));
        assert_eq!(stream_message_len(&m), Ok(Some(64)));
        assert!(!is_reply(&m));
        assert!(make_reply(&mut m));
        assert!(is_reply(&m));
    }
}
