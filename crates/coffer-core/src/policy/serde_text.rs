//! Serde for types written as one string ("1h", "node:02ab..."), parsed in
//! the visitor. Parsing there, rather than with `#[serde(try_from =
//! "String")]`, makes serde_json report the error right after the string
//! instead of after the next separator, so that
//! [`super::json_path`] names the right array element.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Deserialises a `T` from a string with `parse`.
pub(crate) fn deserialize<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    deserializer.deserialize_str(ParseVisitor { expecting, parse, output: PhantomData })
}

struct ParseVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
    output: PhantomData<T>,
}

impl<T> Visitor<'_> for ParseVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        (self.parse)(text).map_err(E::custom)
    }
}
