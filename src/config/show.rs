//! The configuration written back out as TOML ([`to_toml`]), for `show config` and for an
//! operator to save after runtime changes: loading the text again gives the same
//! [`FileConfig`], and so the same validated configuration.
//!
//! The layout follows the example file rather than the serializer's defaults: one section per
//! table in the order the reader expects (`[daemon]`, `[[http]]` with its indented
//! `[[http.route]]`s, `[[mysql]]`, `[pool.NAME]` with `.sticky` and `.health`), keys in
//! declaration order, and `servers` as an array of inline tables one per line, so a pool reads
//! as a list. Values, keys and string escapes are written by the `toml` crate's
//! [`toml::ser::ValueSerializer`]; only the arrangement is done here.

use serde::ser::{self, Impossible, Serialize, SerializeStruct, Serializer};

use super::file::FileConfig;

/// Render `f` as a TOML document that [`super::from_str`] reads back to an equal
/// [`FileConfig`]. Keys that are absent stay absent (no defaults are filled in). The caller
/// adds any header comment (such as the generation number).
pub fn to_toml(f: &FileConfig) -> String {
    let mut out = String::new();
    section(&mut out, "[daemon]", "", &f.daemon, &[]);
    for h in &f.http {
        out.push('\n');
        section(&mut out, "[[http]]", "", h, &["route"]);
        for r in &h.route {
            out.push('\n');
            section(&mut out, "  [[http.route]]", "  ", r, &[]);
        }
    }
    for m in &f.mysql {
        out.push('\n');
        section(&mut out, "[[mysql]]", "", m, &[]);
    }
    for (name, p) in &f.pool {
        let table = format!("pool.{}", key(name));
        out.push('\n');
        section(&mut out, &format!("[{table}]"), "", p, &SUBTABLES);
        if !p.servers.is_empty() {
            out.push_str("servers = [\n");
            for s in &p.servers {
                out.push_str("  ");
                out.push_str(&value(s).unwrap_or_else(|e| unwritable("server", &e)));
                out.push_str(",\n");
            }
            out.push_str("]\n");
        }
        if let Some(st) = &p.sticky {
            out.push('\n');
            section(&mut out, &format!("[{table}.sticky]"), "", st, &[]);
        }
        if let Some(h) = &p.health {
            out.push('\n');
            section(&mut out, &format!("[{table}.health]"), "", h, &[]);
        }
    }
    if let Some(a) = &f.admin {
        out.push('\n');
        section(&mut out, "[admin]", "", a, &["users"]);
        if !a.users.is_empty() {
            out.push_str("users = [\n");
            for u in &a.users {
                out.push_str("  ");
                out.push_str(&value(u).unwrap_or_else(|e| unwritable("admin user", &e)));
                out.push_str(",\n");
            }
            out.push_str("]\n");
        }
    }
    out
}

/// `PoolFile` fields written by [`to_toml`] itself rather than as `key = value` lines.
const SUBTABLES: [&str; 3] = ["servers", "sticky", "health"];

/// A table header, then one `key = value` line per field of `v` that is present and not in
/// `skip`, each line starting with `indent`.
fn section<T: Serialize>(out: &mut String, header: &str, indent: &str, v: &T, skip: &[&str]) {
    out.push_str(header);
    out.push('\n');
    match v.serialize(FieldLister { skip }) {
        Ok(fields) => {
            for (k, val) in fields {
                out.push_str(indent);
                out.push_str(k);
                out.push_str(" = ");
                out.push_str(&val);
                out.push('\n');
            }
        }
        Err(e) => out.push_str(&unwritable(header, &e)),
    }
}

/// One value as inline TOML (`"text"`, `[1, 2]`, `{ a = 1 }`), quoted and escaped as TOML
/// requires.
fn value<T: Serialize + ?Sized>(v: &T) -> Result<String, toml::ser::Error> {
    let mut s = String::new();
    v.serialize(toml::ser::ValueSerializer::new(&mut s))?;
    Ok(s)
}

/// A table key: bare when TOML allows it, otherwise a quoted (escaped) string.
fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if bare {
        return name.to_owned();
    }
    value(name).unwrap_or_else(|_| format!("{name:?}"))
}

/// What stands in for a part that could not be written. The file types hold only strings,
/// integers, floats, booleans, lists and string maps, all of which TOML can express, so this
/// is never expected; a comment keeps the rest of the output usable and says what is missing.
fn unwritable(what: &str, e: &toml::ser::Error) -> String {
    format!("# {what}: cannot be written as TOML: {e}\n")
}

/// A serializer that accepts only a struct and lists its fields in declaration order as
/// `(key, inline TOML value)`. Serde's derive already skips absent keys
/// (`skip_serializing_if`), so what comes out is exactly what the file said.
struct FieldLister<'a> {
    skip: &'a [&'a str],
}

type Fields = Vec<(&'static str, String)>;

struct FieldList<'a> {
    skip: &'a [&'a str],
    fields: Fields,
}

impl SerializeStruct for FieldList<'_> {
    type Ok = Fields;
    type Error = toml::ser::Error;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> Result<(), Self::Error> {
        if !self.skip.contains(&key) {
            self.fields.push((key, value(v)?));
        }
        Ok(())
    }

    fn end(self) -> Result<Fields, Self::Error> {
        Ok(self.fields)
    }
}

fn not_a_struct() -> toml::ser::Error {
    ser::Error::custom("only a struct's fields can be listed as key = value lines")
}

/// The `Serializer` methods for everything but a struct, each refusing.
macro_rules! refuse {
    ($($method:ident($($arg:ty),*) -> $ret:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$ret, Self::Error> {
            Err(not_a_struct())
        })*
    };
}

impl<'a> Serializer for FieldLister<'a> {
    type Ok = Fields;
    type Error = toml::ser::Error;
    type SerializeSeq = Impossible<Fields, toml::ser::Error>;
    type SerializeTuple = Impossible<Fields, toml::ser::Error>;
    type SerializeTupleStruct = Impossible<Fields, toml::ser::Error>;
    type SerializeTupleVariant = Impossible<Fields, toml::ser::Error>;
    type SerializeMap = Impossible<Fields, toml::ser::Error>;
    type SerializeStruct = FieldList<'a>;
    type SerializeStructVariant = Impossible<Fields, toml::ser::Error>;

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<FieldList<'a>, Self::Error> {
        Ok(FieldList {
            skip: self.skip,
            fields: Vec::with_capacity(len),
        })
    }

    refuse! {
        serialize_bool(bool) -> Fields;
        serialize_i8(i8) -> Fields;
        serialize_i16(i16) -> Fields;
        serialize_i32(i32) -> Fields;
        serialize_i64(i64) -> Fields;
        serialize_u8(u8) -> Fields;
        serialize_u16(u16) -> Fields;
        serialize_u32(u32) -> Fields;
        serialize_u64(u64) -> Fields;
        serialize_f32(f32) -> Fields;
        serialize_f64(f64) -> Fields;
        serialize_char(char) -> Fields;
        serialize_str(&str) -> Fields;
        serialize_bytes(&[u8]) -> Fields;
        serialize_none() -> Fields;
        serialize_unit() -> Fields;
        serialize_unit_struct(&'static str) -> Fields;
        serialize_unit_variant(&'static str, u32, &'static str) -> Fields;
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize)
            -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct_variant(&'static str, u32, &'static str, usize)
            -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Result<Fields, Self::Error> {
        v.serialize(self)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        v: &T,
    ) -> Result<Fields, Self::Error> {
        v.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Fields, Self::Error> {
        Err(not_a_struct())
    }
}

#[cfg(test)]
mod tests;
