//! The QR code of an invoice, as SVG or PNG: pure functions, no I/O.
//!
//! The code holds `LIGHTNING:` and the BOLT11 string in upper case. Wallets
//! read the `lightning:` URI scheme and BOLT11's bech32 without regard to
//! case, and upper case lets the QR code use its alphanumeric mode (5.5 bits
//! a character instead of 8), so the code is smaller and scans more easily.
//!
//! Both renderings draw from the module matrix of the `qrcode` crate (error
//! correction level M), with a quiet zone of [`QUIET_ZONE_MODULES`] light
//! modules on every side.

use qrcode::{Color, EcLevel, QrCode};
use std::fmt::Write as _;

/// The light border on each side, in modules: 4 is what the QR standard asks.
pub const QUIET_ZONE_MODULES: usize = 4;
/// The bounds a PNG's pixels per module are clamped to.
pub const PNG_SCALE_MIN_PX: u32 = 1;
pub const PNG_SCALE_MAX_PX: u32 = 16;
const _: () = assert!(PNG_SCALE_MIN_PX >= 1);
const _: () = assert!(PNG_SCALE_MIN_PX <= PNG_SCALE_MAX_PX);
/// The longest payload encoded, in characters: what the largest QR code
/// (version 40) holds at level M in alphanumeric mode. Longer input is
/// refused before any encoding work.
pub const PAYLOAD_LEN_MAX_BYTES: usize = 3_391;
/// The side of the largest QR code (version 40), in modules.
const CODE_WIDTH_MAX_MODULES: usize = 177;
/// The side of the largest PNG, in pixels (2,960): the image size is bounded.
pub const PNG_SIDE_MAX_PX: u32 = (CODE_WIDTH_MAX_MODULES + 2 * QUIET_ZONE_MODULES) as u32 * PNG_SCALE_MAX_PX;
const _: () = assert!(PNG_SIDE_MAX_PX == 2_960);

const SCHEME: &str = "LIGHTNING:";

/// Why no QR code could be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QrError {
    /// The payload (prefix included) is more than a QR code holds.
    TooLong { len: usize },
    /// The encoder refused the payload, or the PNG encoder failed.
    Encode(String),
}

impl std::fmt::Display for QrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QrError::TooLong { len } => write!(
                f,
                "the invoice is too long for a QR code: {len} characters with the `{SCHEME}` prefix \
                 (at most {PAYLOAD_LEN_MAX_BYTES})"
            ),
            QrError::Encode(why) => write!(f, "could not render the QR code: {why}"),
        }
    }
}

impl std::error::Error for QrError {}

/// The text the QR code holds: `LIGHTNING:` and the BOLT11 in upper case.
/// `bolt11` is a bare invoice, without a `lightning:` prefix.
pub fn payload(bolt11: &str) -> String {
    let mut text = String::with_capacity(SCHEME.len() + bolt11.len());
    text.push_str(SCHEME);
    // ASCII only: Unicode upper-casing can change a string's length.
    text.push_str(&bolt11.to_ascii_uppercase());
    text
}

/// The QR code as a compact SVG: a white background and one `<path>` of the
/// dark modules, in a `viewBox` of one unit per module (quiet zone included)
/// with `shape-rendering="crispEdges"`. It has no width or height, so it
/// takes the size of the box it is put in.
pub fn svg(bolt11: &str) -> Result<String, QrError> {
    svg_of(&payload(bolt11))
}

/// The QR code of any text, as it is (an NWC connection URI), as [`svg`]
/// draws it.
pub fn svg_of(text: &str) -> Result<String, QrError> {
    let code = Matrix::encode(text)?;
    let side = code.width + 2 * QUIET_ZONE_MODULES;
    // Each horizontal run of dark modules is one closed rectangle.
    let mut d = String::with_capacity(code.width * code.width * 2);
    for y in 0..code.width {
        let row = code.row(y);
        let mut x = 0;
        while x < code.width {
            if !row[x] {
                x += 1;
                continue;
            }
            let start = x;
            while x < code.width && row[x] {
                x += 1;
            }
            let run = x - start;
            let (left, top) = (start + QUIET_ZONE_MODULES, y + QUIET_ZONE_MODULES);
            // Writing to a String cannot fail.
            let _ = write!(d, "M{left} {top}h{run}v1h-{run}z");
        }
    }
    Ok(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {side} {side}" shape-rendering="crispEdges"><rect width="{side}" height="{side}" fill="#fff"/><path fill="#000" d="{d}"/></svg>"##
    ))
}

/// The QR code as a 1-bit grayscale PNG, `scale_px` pixels a module (clamped
/// to [`PNG_SCALE_MIN_PX`]..=[`PNG_SCALE_MAX_PX`]), quiet zone included: at
/// most [`PNG_SIDE_MAX_PX`] pixels a side.
pub fn png(bolt11: &str, scale_px: u32) -> Result<Vec<u8>, QrError> {
    let code = Matrix::encode(&payload(bolt11))?;
    let scale = scale_px.clamp(PNG_SCALE_MIN_PX, PNG_SCALE_MAX_PX) as usize;
    let side_px = (code.width + 2 * QUIET_ZONE_MODULES) * scale;
    debug_assert!(side_px <= PNG_SIDE_MAX_PX as usize);
    // 1-bit grayscale: 1 is white, 0 black; the first pixel is the high bit.
    let row_bytes = side_px.div_ceil(8);
    let mut pixels = vec![0xFF_u8; row_bytes * side_px];
    let mut line = vec![0xFF_u8; row_bytes];
    for y in 0..code.width {
        line.fill(0xFF);
        for (x, _) in code.row(y).iter().enumerate().filter(|(_, dark)| **dark) {
            let first = (x + QUIET_ZONE_MODULES) * scale;
            for px in first..first + scale {
                line[px / 8] &= !(0x80 >> (px % 8));
            }
        }
        let top = (y + QUIET_ZONE_MODULES) * scale;
        for row in pixels.chunks_exact_mut(row_bytes).skip(top).take(scale) {
            row.copy_from_slice(&line);
        }
    }

    let side = u32::try_from(side_px).map_err(|_| QrError::Encode("image too large".to_owned()))?;
    let mut out = Vec::new();
    let mut encoder = ::png::Encoder::new(&mut out, side, side);
    encoder.set_color(::png::ColorType::Grayscale);
    encoder.set_depth(::png::BitDepth::One);
    let encode_error = |e: ::png::EncodingError| QrError::Encode(e.to_string());
    let mut writer = encoder.write_header().map_err(encode_error)?;
    writer.write_image_data(&pixels).map_err(encode_error)?;
    writer.finish().map_err(encode_error)?;
    Ok(out)
}

/// The modules of a QR code, quiet zone excluded: `true` is dark.
struct Matrix {
    width: usize,
    dark: Vec<bool>,
}

impl Matrix {
    /// The matrix of `text` as it is (callers add the `LIGHTNING:` scheme).
    fn encode(text: &str) -> Result<Matrix, QrError> {
        if text.len() > PAYLOAD_LEN_MAX_BYTES {
            return Err(QrError::TooLong { len: text.len() });
        }
        let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M).map_err(|e| match e {
            // Input outside the alphanumeric set takes more bits a character.
            qrcode::types::QrError::DataTooLong => QrError::TooLong { len: text.len() },
            other => QrError::Encode(other.to_string()),
        })?;
        let width = code.width();
        let dark = code.into_colors().into_iter().map(|c| c == Color::Dark).collect();
        Ok(Matrix { width, dark })
    }

    fn row(&self, y: usize) -> &[bool] {
        &self.dark[y * self.width..(y + 1) * self.width]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A regtest invoice's shape: bech32 characters, lower case.
    const BOLT11: &str = "lnbcrt210n1pn8m5mqpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypqdq5v9hxzmnfdenjqcn4v\
        ssp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygs9qyysgqcqpcxqyz5vqrzjqwryaup9lh50kkranzgcdnn2fgvx390wgj5jd07rwr3vxeje0glcll";

    const ALPHANUMERIC: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

    fn matrix() -> Matrix {
        Matrix::encode(&payload(BOLT11)).unwrap()
    }

    #[test]
    fn payload_is_the_upper_case_invoice_after_the_scheme() {
        let text = payload(BOLT11);
        assert!(text.starts_with("LIGHTNING:"));
        assert_eq!(text, format!("LIGHTNING:{}", BOLT11.to_uppercase()));
        assert!(!text.chars().any(|c| c.is_ascii_lowercase()));
        // So the encoder can use its dense alphanumeric mode throughout.
        assert!(text.chars().all(|c| ALPHANUMERIC.contains(c)));
        assert_eq!(payload(""), "LIGHTNING:");
    }

    #[test]
    fn alphanumeric_mode_keeps_the_code_small() {
        // 300 characters at level M: alphanumeric mode fits version 10 (57
        // modules); byte mode would need version 13 (69 modules).
        let code = Matrix::encode(&payload(&"q".repeat(290))).unwrap();
        assert_eq!(code.width, 57);
    }

    #[test]
    fn svg_is_one_path_of_the_dark_modules() {
        let code = matrix();
        let side = code.width + 2 * QUIET_ZONE_MODULES;
        let svg = svg(BOLT11).unwrap();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{svg}");
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains(&format!("viewBox=\"0 0 {side} {side}\"")));
        assert!(svg.contains("shape-rendering=\"crispEdges\""));
        assert!(svg.contains(&format!("<rect width=\"{side}\" height=\"{side}\" fill=\"#fff\"/>")));
        assert_eq!(svg.matches("<path").count(), 1);
        assert_eq!(svg.matches('<').count(), 4, "svg, rect, path and </svg> only: {svg}");

        // Redraw the path and compare it with the matrix, module by module.
        let d = svg.split(" d=\"").nth(1).unwrap().split('"').next().unwrap();
        let mut drawn = vec![false; side * side];
        for segment in d.split('z').filter(|s| !s.is_empty()) {
            let rest = segment.strip_prefix('M').unwrap();
            let (x, rest) = rest.split_once(' ').unwrap();
            let (y, rest) = rest.split_once('h').unwrap();
            let (run, rest) = rest.split_once("v1h-").unwrap();
            assert_eq!(run, rest, "each rectangle closes on itself: {segment}");
            let (x, y, run): (usize, usize, usize) = (x.parse().unwrap(), y.parse().unwrap(), run.parse().unwrap());
            assert!(run > 0 && x + run <= side - QUIET_ZONE_MODULES && y < side - QUIET_ZONE_MODULES);
            for cell in &mut drawn[y * side + x..y * side + x + run] {
                assert!(!*cell, "modules are drawn once");
                *cell = true;
            }
        }
        for y in 0..side {
            for x in 0..side {
                let inside = (QUIET_ZONE_MODULES..side - QUIET_ZONE_MODULES).contains(&x)
                    && (QUIET_ZONE_MODULES..side - QUIET_ZONE_MODULES).contains(&y);
                let dark = inside && code.row(y - QUIET_ZONE_MODULES)[x - QUIET_ZONE_MODULES];
                assert_eq!(drawn[y * side + x], dark, "module ({x}, {y})");
            }
        }
    }

    /// Decodes a PNG to 8-bit gray pixels: (width, height, pixels).
    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut decoder = ::png::Decoder::new(Cursor::new(bytes));
        decoder.set_transformations(::png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, ::png::ColorType::Grayscale);
        assert_eq!(info.bit_depth, ::png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        (info.width, info.height, buf)
    }

    #[test]
    fn png_decodes_to_the_modules_at_the_scale() {
        let code = matrix();
        let side_modules = code.width + 2 * QUIET_ZONE_MODULES;
        for scale in [1_usize, 3, 8, 16] {
            let bytes = png(BOLT11, scale as u32).unwrap();
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
            let (width, height, pixels) = decode(&bytes);
            let side = side_modules * scale;
            assert_eq!((width as usize, height as usize), (side, side));
            for (i, &pixel) in pixels.iter().enumerate() {
                let (x, y) = (i % side / scale, i / side / scale);
                let inside = (QUIET_ZONE_MODULES..side_modules - QUIET_ZONE_MODULES).contains(&x)
                    && (QUIET_ZONE_MODULES..side_modules - QUIET_ZONE_MODULES).contains(&y);
                let dark = inside && code.row(y - QUIET_ZONE_MODULES)[x - QUIET_ZONE_MODULES];
                assert_eq!(pixel, if dark { 0 } else { 255 }, "scale {scale}, pixel {i}");
            }
        }
    }

    #[test]
    fn png_scale_is_clamped() {
        let side_modules = (matrix().width + 2 * QUIET_ZONE_MODULES) as u32;
        let side = |scale| decode(&png(BOLT11, scale).unwrap()).0;
        assert_eq!(side(0), side_modules * PNG_SCALE_MIN_PX);
        assert_eq!(side(u32::MAX), side_modules * PNG_SCALE_MAX_PX);
    }

    #[test]
    fn the_largest_code_stays_within_the_bound() {
        let longest = "q".repeat(PAYLOAD_LEN_MAX_BYTES - "LIGHTNING:".len());
        let code = Matrix::encode(&payload(&longest)).unwrap();
        assert_eq!(code.width, CODE_WIDTH_MAX_MODULES);
        let (width, height, _) = decode(&png(&longest, 1_000).unwrap());
        assert_eq!((width, height), (PNG_SIDE_MAX_PX, PNG_SIDE_MAX_PX));
    }

    #[test]
    fn oversize_input_is_an_error() {
        let just_over = "q".repeat(PAYLOAD_LEN_MAX_BYTES - "LIGHTNING:".len() + 1);
        assert_eq!(svg(&just_over), Err(QrError::TooLong { len: PAYLOAD_LEN_MAX_BYTES + 1 }));
        assert!(matches!(png(&just_over, 4), Err(QrError::TooLong { .. })));
        let huge = "q".repeat(1_000_000);
        assert!(matches!(svg(&huge), Err(QrError::TooLong { len: 1_000_010 })));
        assert!(matches!(png(&huge, 4), Err(QrError::TooLong { .. })));
        // Outside the alphanumeric set the encoder's own limit applies.
        let bytes = "~".repeat(3_000);
        assert_eq!(png(&bytes, 4), Err(QrError::TooLong { len: 3_010 }));
        assert!(QrError::TooLong { len: 3_010 }.to_string().contains("3010 characters"));
    }
}
