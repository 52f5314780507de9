//! Names read back from a report file (`reprise merge`) as the `&'static str` this build
//! writes them with: a replayer's state, a source's kind, a sink's name. A name this build
//! does not write (a report of a newer one) reads as "unknown" rather than failing the
//! whole file.

use serde::{Deserialize, Deserializer};

/// A name of this build. Spelled as an alias in the types that read one back: serde's
/// derive would otherwise take a `&'static str` field as borrowed from the input, and only
/// a `'static` input could then be read.
pub type Name = &'static str;

/// The one of `names` that `d` holds, or "unknown".
pub fn name<'de, D: Deserializer<'de>>(names: &[&'static str], d: D) -> Result<&'static str, D::Error> {
    let written = String::deserialize(d)?;
    Ok(names.iter().copied().find(|n| *n == written).unwrap_or("unknown"))
}
