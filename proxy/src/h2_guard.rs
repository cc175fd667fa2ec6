//! A watch on the control frames an HTTP/2 client sends. hyper and h2 already stop rapid
//! resets, CONTINUATION floods, HPACK bombs and excess streams; a client that sends SETTINGS
//! or PING frames as fast as it can only costs CPU there, for as long as it likes. This
//! reads the frame headers passing by (nothing else of the stream) and says when such
//! frames come faster than any client needs.
//!
//! Only frame headers are parsed: 9 bytes each, after the 24-byte connection preface; a
//! connection that does not start with the preface (HTTP/1) is not watched.

/// SETTINGS and PING frames (not acknowledgements) a client may send per second. Clients
/// send a handful per connection; gRPC's bandwidth probes, a few per second.
pub(crate) const CONTROL_FRAMES_PER_SECOND: u32 = 200;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;

enum Scan {
    /// How much of the preface has matched so far.
    Preface(usize),
    /// A frame header being read: the bytes so far.
    Header([u8; 9], usize),
    /// Payload bytes still to skip.
    Payload(usize),
    /// Not HTTP/2 (or already judged): nothing more to read.
    Off,
}

/// The watch of one client connection.
pub(crate) struct ControlFrames {
    scan: Scan,
    /// The second (of the caller's clock) being counted, and the frames in it.
    second: u64,
    in_second: u32,
}

impl Default for ControlFrames {
    fn default() -> Self {
        ControlFrames {
            scan: Scan::Preface(0),
            second: 0,
            in_second: 0,
        }
    }
}

impl ControlFrames {
    /// Reads `bytes` as the client sent them; `now_ms` is asked only when a control frame
    /// passes. `true` once the client has sent more than [`CONTROL_FRAMES_PER_SECOND`] in
    /// one second (and from then on).
    pub(crate) fn flooded(&mut self, mut bytes: &[u8], now_ms: impl Fn() -> u64) -> bool {
        while !bytes.is_empty() {
            match &mut self.scan {
                Scan::Off => return self.in_second > CONTROL_FRAMES_PER_SECOND,
                Scan::Preface(matched) => {
                    let want = &PREFACE[*matched..];
                    let n = want.len().min(bytes.len());
                    if bytes[..n] != want[..n] {
                        self.scan = Scan::Off;
                        return false;
                    }
                    *matched += n;
                    bytes = &bytes[n..];
                    if *matched == PREFACE.len() {
                        self.scan = Scan::Header([0; 9], 0);
                    }
                }
                Scan::Header(header, have) => {
                    let n = (9 - *have).min(bytes.len());
                    header[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have < 9 {
                        continue;
                    }
                    let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
                    let (kind, flags) = (header[3], header[4]);
                    if matches!(kind, SETTINGS | PING) && flags & ACK == 0 && self.count(now_ms()) {
                        self.scan = Scan::Off;
                        return true;
                    }
                    self.scan = if len == 0 {
                        Scan::Header([0; 9], 0)
                    } else {
                        Scan::Payload(len)
                    };
                }
                Scan::Payload(left) => {
                    let n = (*left).min(bytes.len());
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.scan = Scan::Header([0; 9], 0);
                    }
                }
            }
        }
        false
    }

    /// Counts one control frame; `true` when that is one too many for this second.
    fn count(&mut self, now_ms: u64) -> bool {
        let second = now_ms / 1000;
        if second != self.second {
            (self.second, self.in_second) = (second, 0);
        }
        self.in_second += 1;
        self.in_second > CONTROL_FRAMES_PER_SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        out.extend_from_slice(&[kind, flags, 0, 0, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    fn preface_and(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = PREFACE.to_vec();
        for f in frames {
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn a_ping_flood_is_caught_in_any_split_and_acks_and_data_do_not_count() {
        let ping = frame(PING, 0, &[0; 8]);
        let ack = frame(PING, ACK, &[0; 8]);
        let data = frame(0x0, 0, &[b'p'; 300]);
        let mut frames = vec![ack.clone(); 500];
        frames.extend(vec![data; 500]);
        frames.extend(vec![ping.clone(); CONTROL_FRAMES_PER_SECOND as usize]);
        let bytes = preface_and(&frames);
        // Fed one byte at a time, in odd pieces, and whole: the same verdict.
        for piece in [1, 7, 9, 100, bytes.len()] {
            let mut watch = ControlFrames::default();
            let caught = bytes
                .chunks(piece)
                .any(|chunk| watch.flooded(chunk, || 5_000));
            assert!(
                !caught,
                "{CONTROL_FRAMES_PER_SECOND} pings in a second are allowed"
            );
            assert!(
                watch.flooded(&ping, || 5_999),
                "one more in the same second is not"
            );
        }
    }

    #[test]
    fn the_budget_is_per_second_and_http1_is_not_watched() {
        let settings = frame(SETTINGS, 0, &[]);
        let mut watch = ControlFrames::default();
        assert!(!watch.flooded(PREFACE, || 0));
        for second in 0..10u64 {
            for _ in 0..CONTROL_FRAMES_PER_SECOND {
                assert!(!watch.flooded(&settings, || second * 1000 + 500));
            }
        }
        let mut http1 = ControlFrames::default();
        let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".repeat(1000);
        assert!(!http1.flooded(&request, || 0));
        assert!(!http1.flooded(&preface_and(&vec![settings; 1000]), || 0));
    }

    proptest::proptest! {
        #[test]
        fn no_input_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096), split in 1usize..64) {
            let mut watch = ControlFrames::default();
            let mut input = PREFACE.to_vec();
            input.extend_from_slice(&bytes);
            for chunk in input.chunks(split) {
                watch.flooded(chunk, || 0);
            }
        }
    }
}
