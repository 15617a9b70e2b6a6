//! Output text as the driver escaped it, checked to be one valid JSON string: it is passed to
//! clients as is. The check skips 64-byte blocks holding no quote, backslash or control byte, so
//! plain text costs about a UTF-8 check (serde_json's `RawValue` walks it byte by byte).

/// A JSON string literal, quotes included, known to be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonString(Box<str>);

impl JsonString {
    /// The literal, quotes included.
    pub fn get(&self) -> &str {
        &self.0
    }

    /// `"` + `contents` + `"` when `contents` is valid inside a JSON string; `None` otherwise.
    pub fn from_contents(contents: &[u8]) -> Option<JsonString> {
        let text = std::str::from_utf8(contents).ok()?;
        if !escapes_are_valid(contents) {
            return None;
        }
        let mut literal = String::with_capacity(text.len() + 2);
        literal.push('"');
        literal.push_str(text);
        literal.push('"');
        Some(JsonString(literal.into_boxed_str()))
    }

    /// A literal serde_json produced or checked.
    pub fn from_raw(raw: &serde_json::value::RawValue) -> Option<JsonString> {
        raw.get()
            .starts_with('"')
            .then(|| JsonString(raw.get().into()))
    }
}

const BLOCK: usize = 64;

/// Whether a block holds no byte that needs a closer look: a quote, a backslash or a control byte.
fn is_plain(block: &[u8]) -> bool {
    // A fold without early exit, so the compiler checks the block with vector instructions.
    let special = block.iter().fold(false, |found, &byte| {
        found | (byte < 0x20) | (byte == b'"') | (byte == b'\\')
    });
    !special
}

/// No raw quote or control byte, and every backslash starts a JSON escape.
fn escapes_are_valid(bytes: &[u8]) -> bool {
    let mut index = 0;
    while index < bytes.len() {
        let block_end = (index + BLOCK).min(bytes.len());
        if block_end - index == BLOCK && is_plain(&bytes[index..block_end]) {
            index = block_end;
            continue;
        }
        // Byte by byte to the block's end; an escape may reach past it.
        while index < block_end {
            match bytes[index] {
                b'\\' => match escape_len(&bytes[index + 1..]) {
                    Some(len) => index += 1 + len,
                    None => return false,
                },
                b'"' | 0..=0x1F => return false,
                _ => index += 1,
            }
        }
    }
    true
}

/// Length of the escape after a backslash (`n`, `u00e9`, ...); `None` when it is not one.
fn escape_len(rest: &[u8]) -> Option<usize> {
    match rest.first()? {
        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(1),
        b'u' => {
            let hex = rest.get(1..5)?;
            // Surrogates (\uD800-\uDFFF) are left to serde_json, which checks their pairing.
            let surrogate = hex[0].eq_ignore_ascii_case(&b'd')
                && matches!(hex[1], b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F');
            (!surrogate && hex.iter().all(u8::is_ascii_hexdigit)).then_some(5)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check agrees with serde_json on whether `"contents"` is one JSON string.
    fn agrees_with_serde(contents: &[u8]) {
        let mut literal = b"\"".to_vec();
        literal.extend_from_slice(contents);
        literal.push(b'"');
        let serde = serde_json::from_slice::<String>(&literal).is_ok();
        let ours = JsonString::from_contents(contents);
        assert_eq!(
            ours.is_some(),
            serde,
            "{:?}",
            String::from_utf8_lossy(contents)
        );
        if let Some(ours) = ours {
            assert_eq!(ours.get().as_bytes(), literal);
        }
    }

    #[test]
    fn agrees_with_serde_json_on_escapes_quotes_controls_and_utf8() {
        let long = "x".repeat(200);
        let samples: Vec<Vec<u8>> = vec![
            b"plain".to_vec(),
            b"".to_vec(),
            br#"a\nb\t\"q\" \\ \/ \b\f\r \u00e9 \u20AC"#.to_vec(),
            br#"bad \x escape"#.to_vec(),
            br#"short \u12"#.to_vec(),
            br#"not hex \u12g4"#.to_vec(),
            br#"trailing \"#.to_vec(),
            br#"raw " quote"#.to_vec(),
            b"raw \x01 control".to_vec(),
            b"raw \n newline".to_vec(),
            b"\xff invalid utf-8".to_vec(),
            "é ✓ 😀".as_bytes().to_vec(),
        ];
        for sample in samples {
            agrees_with_serde(&sample);
            // At every offset inside and across the 64-byte blocks.
            for offset in [1, 60, 63, 64, 127] {
                let mut shifted = long.as_bytes()[..offset].to_vec();
                shifted.extend_from_slice(&sample);
                shifted.extend_from_slice(long.as_bytes());
                agrees_with_serde(&shifted);
            }
        }
    }

    #[test]
    fn surrogate_escapes_are_left_to_serde_json() {
        assert!(JsonString::from_contents(br#"\uD83D\uDE00"#).is_none());
        assert!(JsonString::from_contents(br#"\udfff"#).is_none());
        assert!(JsonString::from_contents(br#"\uD7FF"#).is_some());
    }

    #[test]
    fn a_utf8_character_cut_by_a_block_boundary_is_still_valid() {
        let text = format!("{}é{}", "a".repeat(63), "b".repeat(100));
        agrees_with_serde(text.as_bytes());
        agrees_with_serde(&text.as_bytes()[..64]);
    }
}
