//! How deeply an AMF0 message nests, found without recursion.
//!
//! The AMF0 decoder under rml_rtmp recurses once per nested object or array, so a command of a
//! few kilobytes nested a few thousand levels deep overflows the thread's stack and aborts the
//! whole process. Every AMF message is measured here first and refused when too deep.

/// Nesting no encoder needs: `connect` and `onMetaData` use one or two levels.
pub const MAX_AMF_DEPTH: usize = 16;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const REFERENCE: u8 = 0x07;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0a;
const DATE: u8 = 0x0b;
const LONG_STRING: u8 = 0x0c;
const UNSUPPORTED: u8 = 0x0d;
const XML_DOCUMENT: u8 = 0x0f;
const TYPED_OBJECT: u8 = 0x10;

enum Frame {
    /// Inside an object or ECMA array: properties until the end marker.
    Object,
    /// Inside a strict array: this many values left.
    Array(u32),
}

/// Whether the values in `data` nest deeper than `limit`. Malformed input that is not too deep
/// is reported as fine: the decoder will refuse it with its own error.
pub fn nests_deeper_than(data: &[u8], limit: usize) -> bool {
    let mut pos = 0usize;
    let mut stack: Vec<Frame> = Vec::new();
    loop {
        match stack.last_mut() {
            Some(Frame::Object) => {
                let Some(len) = read_u16(data, pos) else {
                    return false;
                };
                pos += 2;
                if len == 0 {
                    if data.get(pos) != Some(&OBJECT_END) {
                        return false;
                    }
                    pos += 1;
                    stack.pop();
                    continue;
                }
                pos += usize::from(len);
            }
            Some(Frame::Array(0)) => {
                stack.pop();
                continue;
            }
            Some(Frame::Array(left)) => *left -= 1,
            None if pos >= data.len() => return false,
            None => {}
        }
        let Some(&marker) = data.get(pos) else {
            return false;
        };
        pos += 1;
        let skip = match marker {
            NUMBER => 8,
            BOOLEAN => 1,
            NULL | UNDEFINED | UNSUPPORTED => 0,
            REFERENCE => 2,
            DATE => 10,
            STRING => match read_u16(data, pos) {
                Some(len) => 2 + usize::from(len),
                None => return false,
            },
            LONG_STRING | XML_DOCUMENT => match read_u32(data, pos) {
                Some(len) => 4 + len as usize,
                None => return false,
            },
            OBJECT => {
                stack.push(Frame::Object);
                0
            }
            ECMA_ARRAY => {
                stack.push(Frame::Object);
                4
            }
            TYPED_OBJECT => match read_u16(data, pos) {
                Some(len) => {
                    stack.push(Frame::Object);
                    2 + usize::from(len)
                }
                None => return false,
            },
            STRICT_ARRAY => match read_u32(data, pos) {
                Some(count) => {
                    stack.push(Frame::Array(count));
                    4
                }
                None => return false,
            },
            // The decoder stops a value list (or an array) at an end marker.
            OBJECT_END => match stack.last() {
                Some(Frame::Array(_)) => {
                    stack.pop();
                    0
                }
                _ => return false,
            },
            _ => return false,
        };
        if stack.len() > limit {
            return true;
        }
        pos = pos.saturating_add(skip);
    }
}

fn read_u16(data: &[u8], pos: usize) -> Option<u16> {
    let bytes = data.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_be_bytes([bytes[0], bytes[1]]))
}

fn read_u32(data: &[u8], pos: usize) -> Option<u32> {
    let bytes = data.get(pos..pos.checked_add(4)?)?;
    Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `depth` objects, each holding the next under the key "a".
    pub fn nested_objects(depth: usize) -> Vec<u8> {
        let mut out = vec![STRING, 0, 7];
        out.extend(b"connect");
        out.extend([NUMBER, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
        for _ in 0..depth {
            out.extend([OBJECT, 0, 1, b'a']);
        }
        out.push(NULL);
        for _ in 0..depth {
            out.extend([0, 0, OBJECT_END]);
        }
        out
    }

    fn nested_arrays(depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..depth {
            out.extend([STRICT_ARRAY, 0, 0, 0, 1]);
        }
        out.push(NULL);
        out
    }

    #[test]
    fn measures_objects_and_arrays() {
        assert!(!nests_deeper_than(&nested_objects(16), 16));
        assert!(nests_deeper_than(&nested_objects(17), 16));
        assert!(!nests_deeper_than(&nested_arrays(16), 16));
        assert!(nests_deeper_than(&nested_arrays(17), 16));
        // Unterminated nesting (the attack: no end markers at all) is still measured.
        let mut open = Vec::new();
        for _ in 0..100_000 {
            open.extend([OBJECT, 0, 1, b'a']);
        }
        assert!(nests_deeper_than(&open, 16));
    }

    #[test]
    fn an_ordinary_connect_command_is_shallow() {
        // "connect", 1, {app: "live", tcUrl: "rtmp://h/live", flashVer: ..., audioCodecs: 3191.0}
        let mut data = vec![STRING, 0, 7];
        data.extend(b"connect");
        data.extend([NUMBER, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, OBJECT]);
        for (key, value) in [
            ("app", "live"),
            ("tcUrl", "rtmp://h/live"),
            ("type", "nonprivate"),
        ] {
            data.extend((key.len() as u16).to_be_bytes());
            data.extend(key.as_bytes());
            data.push(STRING);
            data.extend((value.len() as u16).to_be_bytes());
            data.extend(value.as_bytes());
        }
        data.extend([0, 11]);
        data.extend(b"audioCodecs");
        data.extend([NUMBER, 0x40, 0xa8, 0xee, 0, 0, 0, 0, 0]);
        data.extend([0, 0, OBJECT_END]);
        assert!(!nests_deeper_than(&data, 1));
        assert!(nests_deeper_than(&data, 0));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = nests_deeper_than(&data, MAX_AMF_DEPTH);
        }
    }
}
