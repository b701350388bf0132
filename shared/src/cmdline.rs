//! Parsing of `key=value` kernel command lines (multiboot2).

/// The value of `key` on the command line: the text after `key=` up to the
/// next space, or an empty string for a bare `key`. The last occurrence wins.
pub fn get<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_ascii_whitespace()
        .rev()
        .find_map(|word| match word.split_once('=') {
            Some((k, v)) if k == key => Some(v),
            None if word == key => Some(""),
            _ => None,
        })
}

/// Parses a number written in hex (with or without `0x`).
pub fn parse_hex(s: &str) -> Option<u64> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Parses a decimal number, or hex with a `0x` prefix.
pub fn parse_num(s: &str) -> Option<u64> {
    if s.starts_with("0x") || s.starts_with("0X") {
        parse_hex(s)
    } else {
        s.parse().ok()
    }
}

/// `key` parsed as hex, if present and well-formed.
pub fn get_hex(cmdline: &str, key: &str) -> Option<u64> {
    get(cmdline, key).and_then(parse_hex)
}

/// `key` parsed as a decimal (or `0x` hex) number, if present and well-formed.
pub fn get_num(cmdline: &str, key: &str) -> Option<u64> {
    get(cmdline, key).and_then(parse_num)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_values_and_bare_flags() {
        let c = "/boot/lhv lhv_opt=0x4 mode=probe quiet lhv_opt=0x14";
        assert_eq!(get(c, "lhv_opt"), Some("0x14"));
        assert_eq!(get(c, "mode"), Some("probe"));
        assert_eq!(get(c, "quiet"), Some(""));
        assert_eq!(get(c, "lhv"), None);
        assert_eq!(get_hex(c, "lhv_opt"), Some(0x14));
    }

    #[test]
    fn hex_and_numbers() {
        assert_eq!(parse_hex("ff"), Some(0xff));
        assert_eq!(parse_hex("0x3F8"), Some(0x3f8));
        assert_eq!(parse_hex("0x"), None);
        assert_eq!(parse_hex("zz"), None);
        assert_eq!(parse_num("20"), Some(20));
        assert_eq!(parse_num("0x20"), Some(32));
    }
}
