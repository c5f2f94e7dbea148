//! `${NAME}` in pipeline files: the environment variable's value, substituted into each parsed
//! string value, never into the file's text. A value is a value whatever characters it holds
//! (`: `, ` #`, quotes, `*`, `&`, `{`, `[`), `$${` stays a literal `${`, and an unset variable is
//! an error at the value's own line and column.
//!
//! [`Substituting`] wraps a serde deserializer (YAML's or TOML's) and hands every string value
//! (map keys excepted) through [`substitute`] on its way to the type that reads it. The values of
//! variables whose names look secret are remembered in [`Secrets`], so whatever is shown or
//! stored can mask them. [`Substitutable`] says the same to a JSON Schema of the file: where a
//! value may be a `${NAME}`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use crate::secrets::{Secrets, looks_secret};
use schemars::Schema;
use schemars::transform::{Transform, transform_subschemas};
use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};

/// Replaces each `${NAME}` in `value` with the variable's value; `$${` stays a literal `${`.
pub fn substitute<'v>(
    value: &'v str,
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Secrets,
) -> Result<Cow<'v, str>, String> {
    if !value.contains("${") {
        return Ok(Cow::Borrowed(value));
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        if start > 0 && rest.as_bytes()[start - 1] == b'$' {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            return Err("`${` without a closing `}`".into());
        };
        let name = &rest[start + 2..start + end];
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("`${{{name}}}` is not an environment variable name"));
        }
        let found =
            lookup(name).ok_or_else(|| format!("environment variable `{name}` is not set"))?;
        if looks_secret(name) {
            secrets.add(&found);
        }
        out.push_str(&found);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// Where substitution looks variables up, and what it learns of secrets.
pub struct Env<'l> {
    lookup: &'l dyn Fn(&str) -> Option<String>,
    secrets: RefCell<Secrets>,
}

impl<'l> Env<'l> {
    /// Substitution that takes variables from `lookup`.
    pub fn new(lookup: &'l dyn Fn(&str) -> Option<String>) -> Self {
        Env {
            lookup,
            secrets: RefCell::default(),
        }
    }

    /// The secrets seen so far.
    pub fn into_secrets(self) -> Secrets {
        self.secrets.into_inner()
    }

    fn apply<'v, E: de::Error>(&self, value: &'v str) -> Result<Cow<'v, str>, E> {
        substitute(value, self.lookup, &mut self.secrets.borrow_mut()).map_err(E::custom)
    }
}

impl fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

/// A deserializer whose string values pass through [`substitute`].
#[derive(Debug)]
pub struct Substituting<'e, 'l, D> {
    inner: D,
    env: &'e Env<'l>,
}

impl<'e, 'l, D> Substituting<'e, 'l, D> {
    /// Wraps `inner`, taking variables from `env`.
    pub fn new(inner: D, env: &'e Env<'l>) -> Self {
        Substituting { inner, env }
    }
}

macro_rules! forward_deserialize {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method(Wrap { inner: visitor, env: self.env })
        }
    )*};
}

/// A number or a boolean is asked for as any value: a scalar that is one `${NAME}` reaches it
/// as the text it holds, which [`Typed`] reads as the type asked for.
macro_rules! typed_deserialize {
    ($($method:ident => $kind:expr),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.deserialize_any(Typed {
                wrap: Wrap { inner: visitor, env: self.env },
                kind: $kind,
            })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Substituting<'_, '_, D> {
    type Error = D::Error;

    typed_deserialize!(
        deserialize_bool => Kind::Bool,
        deserialize_i8 => Kind::Signed,
        deserialize_i16 => Kind::Signed,
        deserialize_i32 => Kind::Signed,
        deserialize_i64 => Kind::Signed,
        deserialize_i128 => Kind::Signed,
        deserialize_u8 => Kind::Unsigned,
        deserialize_u16 => Kind::Unsigned,
        deserialize_u32 => Kind::Unsigned,
        deserialize_u64 => Kind::Unsigned,
        deserialize_u128 => Kind::Unsigned,
        deserialize_f32 => Kind::Float,
        deserialize_f64 => Kind::Float
    );

    forward_deserialize!(
        deserialize_any,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Wrap {
            inner: visitor,
            env: self.env,
        };
        self.inner.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Wrap {
            inner: visitor,
            env: self.env,
        };
        self.inner.deserialize_newtype_struct(name, visitor)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Wrap {
            inner: visitor,
            env: self.env,
        };
        self.inner.deserialize_tuple(len, visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Wrap {
            inner: visitor,
            env: self.env,
        };
        self.inner.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Wrap {
            inner: visitor,
            env: self.env,
        };
        self.inner.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let visitor = Wrap {
            inner: visitor,
            env: self.env,
        };
        self.inner.deserialize_enum(name, variants, visitor)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

/// A visitor that substitutes the strings it is given and wraps what it descends into.
struct Wrap<'e, 'l, V> {
    inner: V,
    env: &'e Env<'l>,
}

/// A visitor's methods for every value but strings, handed as they are to the visitor in
/// `self.$field`: what the two wrapping visitors below leave alone.
macro_rules! forward_non_strings {
    ($field:ident) => {
        forward_non_strings!(@each $field;
            visit_bool: bool,
            visit_i8: i8,
            visit_i16: i16,
            visit_i32: i32,
            visit_i64: i64,
            visit_i128: i128,
            visit_u8: u8,
            visit_u16: u16,
            visit_u32: u32,
            visit_u64: u64,
            visit_u128: u128,
            visit_f32: f32,
            visit_f64: f64,
            visit_char: char,
            visit_bytes: &[u8],
            visit_borrowed_bytes: &'de [u8],
            visit_byte_buf: Vec<u8>
        );
    };
    (@each $field:ident; $($method:ident: $ty:ty),*) => {$(
        fn $method<E: de::Error>(self, value: $ty) -> Result<V::Value, E> {
            self.$field.$method(value)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<'_, '_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_non_strings!(inner);

    fn visit_str<E: de::Error>(self, value: &str) -> Result<V::Value, E> {
        match self.env.apply(value)? {
            Cow::Borrowed(value) => self.inner.visit_str(value),
            Cow::Owned(value) => self.inner.visit_string(value),
        }
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<V::Value, E> {
        match self.env.apply(value)? {
            Cow::Borrowed(value) => self.inner.visit_borrowed_str(value),
            Cow::Owned(value) => self.inner.visit_string(value),
        }
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<V::Value, E> {
        match self.env.apply(&value)? {
            Cow::Borrowed(_) => self.inner.visit_string(value),
            Cow::Owned(value) => self.inner.visit_string(value),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Substituting::new(inner, self.env))
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        self.inner
            .visit_newtype_struct(Substituting::new(inner, self.env))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(Wrap {
            inner: seq,
            env: self.env,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Wrap {
            inner: map,
            env: self.env,
        })
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(Wrap {
            inner: data,
            env: self.env,
        })
    }
}

/// What a typed field asks for.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    Signed,
    Unsigned,
    Float,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Bool => "`true` or `false`",
            Kind::Signed => "a whole number",
            Kind::Unsigned => "a whole number, 0 or more",
            Kind::Float => "a number",
        }
    }
}

/// The name of the variable a scalar that is exactly one `${NAME}` names.
fn whole_reference(value: &str) -> Option<&str> {
    let name = value.trim().strip_prefix("${")?.strip_suffix('}')?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(name)
}

/// A visitor for a number or boolean field: a scalar that is one `${NAME}` is substituted and
/// read as the type asked for (`port: ${SMTP_PORT}`); anything else goes to the field as
/// written.
struct Typed<'e, 'l, V> {
    wrap: Wrap<'e, 'l, V>,
    kind: Kind,
}

impl<'de, V: Visitor<'de>> Typed<'_, '_, V> {
    fn text<E: de::Error>(self, value: &str) -> Result<V::Value, E> {
        let Some(name) = whole_reference(value) else {
            return self.wrap.visit_str(value);
        };
        let text = self.wrap.env.apply::<E>(value)?;
        let text = text.trim();
        // The value itself is not quoted: it may be a secret put in the wrong place.
        let wrong = || {
            E::custom(format!(
                "environment variable `{name}` holds no {} (this setting takes {})",
                match self.kind {
                    Kind::Bool => "boolean",
                    _ => "number",
                },
                self.kind.what()
            ))
        };
        let inner = self.wrap.inner;
        match self.kind {
            Kind::Bool => inner.visit_bool(text.parse().map_err(|_| wrong())?),
            Kind::Unsigned => inner.visit_u64(text.parse().map_err(|_| wrong())?),
            Kind::Signed => inner.visit_i64(text.parse().map_err(|_| wrong())?),
            Kind::Float => inner.visit_f64(text.parse().map_err(|_| wrong())?),
        }
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Typed<'_, '_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.wrap.expecting(f)
    }

    forward_non_strings!(wrap);

    fn visit_str<E: de::Error>(self, value: &str) -> Result<V::Value, E> {
        self.text(value)
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<V::Value, E> {
        self.text(value)
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<V::Value, E> {
        self.text(&value)
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.wrap.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.wrap.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        self.wrap.visit_some(inner)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, inner: D) -> Result<V::Value, D::Error> {
        self.wrap.visit_newtype_struct(inner)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.wrap.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.wrap.visit_map(map)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.wrap.visit_enum(data)
    }
}

/// A seed whose value is read through [`Substituting`].
struct Seed<'e, 'l, S> {
    inner: S,
    env: &'e Env<'l>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<'_, '_, S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner
            .deserialize(Substituting::new(deserializer, self.env))
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Wrap<'_, '_, A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Seed {
            inner: seed,
            env: self.env,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// Keys are names the file's schema knows: only values are substituted.
impl<'de, A: MapAccess<'de>> MapAccess<'de> for Wrap<'_, '_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(Seed {
            inner: seed,
            env: self.env,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, 'e, 'l, A: EnumAccess<'de>> EnumAccess<'de> for Wrap<'e, 'l, A> {
    type Error = A::Error;
    type Variant = Wrap<'e, 'l, A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let env = self.env;
        let (value, variant) = self.inner.variant_seed(Seed { inner: seed, env })?;
        Ok((
            value,
            Wrap {
                inner: variant,
                env,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Wrap<'_, '_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(Seed {
            inner: seed,
            env: self.env,
        })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(
            len,
            Wrap {
                inner: visitor,
                env: self.env,
            },
        )
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(
            fields,
            Wrap {
                inner: visitor,
                env: self.env,
            },
        )
    }
}

/// A string that is exactly one `${NAME}`: what a number or boolean setting takes as text
/// (as `Typed` reads it; a name starting with a digit is refused by [`substitute`]).
pub const WHOLE_REFERENCE: &str = r"^\s*\$\{[A-Za-z_][A-Za-z0-9_]*\}\s*$";

/// A string with a `${NAME}` in it.
pub const HOLDS_REFERENCE: &str = r"\$\{[A-Za-z_][A-Za-z0-9_]*\}";

/// A schema transform that accepts a `${NAME}` wherever [`Substituting`] takes one, so a
/// schema of the file's typed configuration describes the file as written:
///
/// - a free string accepts one already;
/// - a number or boolean also takes a string that is exactly one reference ([`WHOLE_REFERENCE`]),
///   read as the type once substituted;
/// - a string held to some values or a pattern (an action, a duration) also takes any string
///   with a reference ([`HOLDS_REFERENCE`]): its value is checked once substituted;
/// - alternatives (`oneOf`) become `anyOf`, since a reference may stand for more than one.
///
/// Map keys (`propertyNames`) are never substituted, and an `if` stays as it is: it selects
/// by the value as written (`config` typed by a literal `action`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Substitutable;

impl Transform for Substitutable {
    fn transform(&mut self, schema: &mut Schema) {
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        if let Some(pattern) = reference_taken(object) {
            accept_reference(object, pattern);
            return;
        }
        let untouched: Vec<(String, serde_json::Value)> = ["if", "propertyNames"]
            .into_iter()
            .filter_map(|key| object.remove_entry(key))
            .collect();
        transform_subschemas(self, schema);
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        object.extend(untouched);
        if !object.contains_key("anyOf")
            && let Some(one_of) = object.remove("oneOf")
        {
            object.insert("anyOf".into(), one_of);
        }
        if let Some(serde_json::Value::Array(alternatives)) = object.get_mut("anyOf") {
            flatten(alternatives);
        }
    }
}

type Object = serde_json::Map<String, serde_json::Value>;

/// The pattern of the reference a schema's value may also be, if it takes one of its own.
fn reference_taken(schema: &Object) -> Option<&'static str> {
    let types: Vec<&str> = match schema.get("type") {
        Some(serde_json::Value::String(one)) => vec![one.as_str()],
        Some(serde_json::Value::Array(many)) => many.iter().filter_map(|t| t.as_str()).collect(),
        _ => Vec::new(),
    };
    let constant = |schema: &Object| {
        schema.get("const").is_some_and(|c| c.is_string())
            || schema
                .get("enum")
                .and_then(|e| e.as_array())
                .is_some_and(|e| e.iter().all(|v| v.is_string()))
    };
    if constant(schema) || schema.contains_key("pattern") {
        return Some(HOLDS_REFERENCE);
    }
    if types.contains(&"string") {
        // Any string: a reference is one already.
        return None;
    }
    if types
        .iter()
        .any(|t| matches!(*t, "integer" | "number" | "boolean"))
    {
        return Some(WHOLE_REFERENCE);
    }
    // An enum whose values are documented: one constant per alternative.
    let alternatives = schema.get("oneOf").or_else(|| schema.get("anyOf"));
    if let Some(serde_json::Value::Array(alternatives)) = alternatives
        && !alternatives.is_empty()
        && alternatives
            .iter()
            .all(|a| a.as_object().is_some_and(constant))
    {
        return Some(HOLDS_REFERENCE);
    }
    None
}

/// Makes `schema` also take a string matching `pattern`, keeping its title, description and
/// default on the whole.
fn accept_reference(schema: &mut Object, pattern: &str) {
    let reference = serde_json::json!({ "type": "string", "pattern": pattern });
    if let Some(alternatives) = schema.remove("oneOf").or_else(|| schema.remove("anyOf")) {
        let mut alternatives = alternatives.as_array().cloned().unwrap_or_default();
        alternatives.push(reference);
        schema.insert("anyOf".into(), alternatives.into());
        return;
    }
    let mut value = std::mem::take(schema);
    for key in ["title", "description", "default", "examples", "deprecated"] {
        if let Some(kept) = value.remove(key) {
            schema.insert(key.into(), kept);
        }
    }
    schema.insert("anyOf".into(), serde_json::json!([value, reference]));
}

/// Lifts the alternatives of an alternative that is nothing else, and drops repeats (and a
/// whole reference where any string with one is taken).
fn flatten(alternatives: &mut Vec<serde_json::Value>) {
    let mut flat: Vec<serde_json::Value> = Vec::new();
    for alternative in alternatives.drain(..) {
        let nested = match alternative.as_object() {
            Some(object) if object.len() == 1 => object.get("anyOf").and_then(|a| a.as_array()),
            _ => None,
        };
        for each in nested.cloned().unwrap_or_else(|| vec![alternative]) {
            if !flat.contains(&each) {
                flat.push(each);
            }
        }
    }
    let reference = |pattern: &str| serde_json::json!({ "type": "string", "pattern": pattern });
    if flat.contains(&reference(HOLDS_REFERENCE)) {
        flat.retain(|each| *each != reference(WHOLE_REFERENCE));
    }
    *alternatives = flat;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOOK" => Some("https://hooks.example/x".into()),
            "DATABASE_URL" => Some("sqlite::memory:".into()),
            "API_TOKEN" => Some("tok-3f9a".into()),
            "SMTP_PORT" => Some(" 2525 ".into()),
            "TLS_ON" => Some("true".into()),
            "RATE" => Some("50.5".into()),
            "OFFSET" => Some("-3".into()),
            "DB_PASSWORD" => Some("s3cr3t-not-a-number".into()),
            _ => None,
        }
    }

    #[test]
    fn values_are_substituted_and_literals_kept() {
        let mut secrets = Secrets::default();
        assert_eq!(
            substitute("a ${HOOK} b", &env, &mut secrets).unwrap(),
            "a https://hooks.example/x b"
        );
        assert_eq!(
            substitute("cost: $${HOOK}", &env, &mut secrets).unwrap(),
            "cost: ${HOOK}"
        );
        assert_eq!(
            substitute("${MISSING}", &env, &mut secrets).unwrap_err(),
            "environment variable `MISSING` is not set"
        );
        assert!(
            substitute("${", &env, &mut secrets)
                .unwrap_err()
                .contains("without a closing")
        );
        assert!(
            substitute("${1X}", &env, &mut secrets)
                .unwrap_err()
                .contains("not an environment variable name")
        );
        assert!(secrets.is_empty(), "no secret-looking name was used");
        substitute("Bearer ${API_TOKEN}", &env, &mut secrets).unwrap();
        assert_eq!(
            secrets.mask("sent tok-3f9a twice: tok-3f9a"),
            "sent *** twice: ***"
        );
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Doc {
        url: String,
        list: Vec<String>,
        nested: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        maybe: Option<String>,
    }

    fn yaml(text: &str) -> Result<Doc, String> {
        let lookup = |n: &str| env(n);
        let env = Env::new(&lookup);
        serde_saphyr::with_deserializer_from_str(text, |de| {
            serde::Deserialize::deserialize(Substituting::new(de, &env))
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_value_that_would_break_yaml_stays_one_value() {
        let doc = yaml("url: ${DATABASE_URL}\nlist: [\"${HOOK}\", plain]\nnested: { k: \"${DATABASE_URL}\" }\nmaybe: ${HOOK}\n").unwrap();
        assert_eq!(doc.url, "sqlite::memory:");
        assert_eq!(doc.list, ["https://hooks.example/x", "plain"]);
        assert_eq!(doc.nested["k"], "sqlite::memory:");
        assert_eq!(doc.maybe.as_deref(), Some("https://hooks.example/x"));
    }

    #[test]
    fn an_unset_variable_is_located_at_its_value() {
        let error = yaml("url: x\nlist: []\nnested: {}\nmaybe: ${NOPE}\n").unwrap_err();
        assert!(
            error.contains("environment variable `NOPE` is not set"),
            "{error}"
        );
        assert!(error.contains("line 4"), "{error}");
    }

    #[test]
    fn toml_values_are_substituted_too() {
        let lookup = |n: &str| env(n);
        let env = Env::new(&lookup);
        let de = toml::de::Deserializer::parse(
            "url = \"${DATABASE_URL}\"\nlist = []\n[nested]\nk = \"a # ${HOOK}\"\n",
        )
        .unwrap();
        let doc: Doc = serde::Deserialize::deserialize(Substituting::new(de, &env)).unwrap();
        assert_eq!(doc.url, "sqlite::memory:");
        assert_eq!(doc.nested["k"], "a # https://hooks.example/x");
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Typed {
        port: u16,
        tls: bool,
        rate: f64,
        offset: i32,
    }

    fn typed(yaml: &str) -> Result<Typed, String> {
        let lookup = |n: &str| env(n);
        let env = Env::new(&lookup);
        serde_saphyr::with_deserializer_from_str(yaml, |de| {
            serde::Deserialize::deserialize(Substituting::new(de, &env))
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_number_or_boolean_field_takes_a_whole_reference_typed_after_substitution() {
        assert_eq!(
            typed("port: ${SMTP_PORT}\ntls: ${TLS_ON}\nrate: ${RATE}\noffset: ${OFFSET}\n")
                .unwrap(),
            Typed {
                port: 2525,
                tls: true,
                rate: 50.5,
                offset: -3
            }
        );
        assert_eq!(
            typed("port: 25\ntls: false\nrate: 1\noffset: 0\n").unwrap(),
            Typed {
                port: 25,
                tls: false,
                rate: 1.0,
                offset: 0
            },
            "written values are read as before"
        );
        let lookup = |n: &str| env(n);
        let env = Env::new(&lookup);
        let de = toml::de::Deserializer::parse(
            "port = \"${SMTP_PORT}\"\ntls = true\nrate = \"${RATE}\"\noffset = 1\n",
        )
        .unwrap();
        let doc: Typed = serde::Deserialize::deserialize(Substituting::new(de, &env)).unwrap();
        assert_eq!((doc.port, doc.rate), (2525, 50.5));
    }

    #[test]
    fn a_schema_takes_a_reference_wherever_substitution_does() {
        use serde_json::json;
        let mut schema = schemars::json_schema!({
            "type": "object",
            "properties": {
                "port": { "description": "d", "type": "integer", "minimum": 0 },
                "tls": { "type": ["boolean", "null"], "default": false },
                "name": { "type": "string" },
                "kind": { "oneOf": [{ "const": "a" }, { "const": "b", "description": "b" }] },
                "every": { "anyOf": [{ "type": "number" }, { "type": "string", "pattern": "^[0-9]+s$" }] },
                "env": { "type": "object", "additionalProperties": { "type": "string" }, "propertyNames": { "pattern": "^[A-Z]+$" } }
            },
            "if": { "properties": { "kind": { "const": "a" } } },
            "then": { "properties": { "port": { "maximum": 80 } } }
        });
        Substitutable.transform(&mut schema);
        let whole = json!({ "type": "string", "pattern": WHOLE_REFERENCE });
        let holds = json!({ "type": "string", "pattern": HOLDS_REFERENCE });
        let properties = &schema.as_value()["properties"];
        assert_eq!(
            properties["port"],
            json!({ "description": "d", "anyOf": [{ "type": "integer", "minimum": 0 }, whole] })
        );
        assert_eq!(
            properties["tls"],
            json!({ "default": false, "anyOf": [{ "type": ["boolean", "null"] }, whole] })
        );
        assert_eq!(
            properties["name"],
            json!({ "type": "string" }),
            "free already"
        );
        assert_eq!(
            properties["kind"],
            json!({ "anyOf": [{ "const": "a" }, { "const": "b", "description": "b" }, holds] })
        );
        assert_eq!(
            properties["every"],
            json!({ "anyOf": [{ "type": "number" }, { "type": "string", "pattern": "^[0-9]+s$" }, holds] }),
            "a whole reference is one of the strings with a reference"
        );
        assert_eq!(
            properties["env"]["propertyNames"],
            json!({ "pattern": "^[A-Z]+$" }),
            "keys are not substituted"
        );
        assert_eq!(
            schema.as_value()["if"],
            json!({ "properties": { "kind": { "const": "a" } } }),
            "a condition selects by the value as written"
        );

        let matches = |pattern: &str, text: &str| {
            jsonschema::is_valid(&json!({ "pattern": pattern }), &json!(text))
        };
        for (text, is_whole) in [
            ("${SMTP_PORT}", true),
            (" ${RATE} ", true),
            ("x${RATE}", false),
        ] {
            assert_eq!(matches(WHOLE_REFERENCE, text), is_whole, "{text}");
            assert_eq!(whole_reference(text).is_some(), is_whole, "{text}");
            assert!(matches(HOLDS_REFERENCE, text), "{text}");
            assert!(
                substitute(text, &env, &mut Secrets::default()).is_ok(),
                "{text}"
            );
        }
        for refused in ["${1X}", "${}", "${A-B}"] {
            assert!(!matches(HOLDS_REFERENCE, refused), "{refused}");
            assert!(
                substitute(refused, &env, &mut Secrets::default()).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_reference_that_does_not_fit_is_named_at_its_line_without_its_value() {
        let error = typed("port: ${DB_PASSWORD}\ntls: true\nrate: 1\noffset: 0\n").unwrap_err();
        assert!(
            error.contains("environment variable `DB_PASSWORD` holds no number"),
            "{error}"
        );
        assert!(error.contains("line 1"), "{error}");
        assert!(!error.contains("s3cr3t"), "{error}");
        let error = typed("port: 1\ntls: ${SMTP_PORT}\nrate: 1\noffset: 0\n").unwrap_err();
        assert!(error.contains("holds no boolean"), "{error}");
        let error = typed("port: x${SMTP_PORT}\ntls: true\nrate: 1\noffset: 0\n").unwrap_err();
        assert!(
            error.contains("u16"),
            "a text with more than a reference is no number: {error}"
        );
    }
}
