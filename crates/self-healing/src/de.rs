//! Deserializing configuration that users write: maps tagged by one key (`type: http`,
//! `action: retry`) whose variants are typed structs of their own, with errors that keep the
//! line and column of the key at fault.
//!
//! serde's internally tagged enums read the whole map into a buffer before they know the
//! variant, and `#[serde(flatten)]` does the same, so every error inside them points at the
//! start of the map. [`deserialize_tagged`] reads the map in order instead: once it has seen
//! the tag, the variant's struct reads the remaining keys straight from the file (exact line and
//! column, `deny_unknown_fields` with its list of keys); only keys written before the tag are
//! buffered, and their errors keep just the key's path. [`tagged_schema`] describes the same
//! maps as JSON Schema, from the same registration of the variants ([`Tagged::registered`]).
//!
//! ```
//! use serde::Deserialize;
//! use self_healing::de::{Tagged, deserialize_tagged};
//!
//! #[derive(Debug, Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Tcp { host: String, port: u16 }
//!
//! #[derive(Debug)]
//! enum Check { Tcp(Tcp) }
//!
//! impl Tagged for Check {
//!     const TAG: &'static str = "type";
//!     self_healing::tagged_variants!(Check { "tcp" => Tcp });
//! }
//!
//! impl<'de> Deserialize<'de> for Check {
//!     fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
//!         deserialize_tagged(d)
//!     }
//! }
//!
//! let check: Check = serde_json::from_str(r#"{"type": "tcp", "host": "db", "port": 5432}"#)?;
//! let Check::Tcp(tcp) = check;
//! assert_eq!(tcp.port, 5432);
//! let wrong = serde_json::from_str::<Check>(r#"{"type": "tcp", "host": "db", "prot": 1}"#);
//! assert!(wrong.unwrap_err().to_string().starts_with("unknown field `prot`"));
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::value::{MapAccessDeserializer, StringDeserializer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor,
};
use serde_json::{Value, json};

/// [`Tagged::VARIANTS`] and [`Tagged::registered`] for an enum whose variants each hold one
/// typed struct, from one list of `"tag" => Variant`: a variant of the enum left out of the list
/// does not compile, and a tag not in it is serde's unknown variant, never another variant's.
///
/// Used inside `impl Tagged for Enum { const TAG: … ; tagged_variants!(Enum { … }); }`.
#[macro_export]
macro_rules! tagged_variants {
    ($enum:ident { $($tag:literal => $variant:ident),+ $(,)? }) => {
        const VARIANTS: &'static [&'static str] = &[$($tag),+];

        fn registered<R: $crate::de::Registration<Self>>(
            tag: &str,
            with: R,
        ) -> ::std::option::Option<R::Output> {
            // Never called: it only compiles while every variant is listed.
            let _every_variant_is_listed = |value: &$enum| match value {
                $($enum::$variant(_))|+ => {}
            };
            match tag {
                $($tag => ::std::option::Option::Some(with.variant($enum::$variant)),)+
                _ => ::std::option::Option::None,
            }
        }
    };
}

/// A type whose map is tagged by the key [`TAG`](Self::TAG), one typed struct per tag value.
/// [`tagged_variants!`](crate::tagged_variants) writes the two items that list the variants.
pub trait Tagged: Sized {
    /// The key that names the variant.
    const TAG: &'static str;
    /// Every value the tag may take, for the error when it takes another.
    const VARIANTS: &'static [&'static str];

    /// Hands `with` the constructor of the variant `tag` names, `None` when none does: the one
    /// registration of the variants' structs, from which both reading one
    /// ([`variant`](Self::variant)) and the schema ([`tagged_schema`]) follow.
    fn registered<R: Registration<Self>>(tag: &str, with: R) -> Option<R::Output>;

    /// The variant `tag` names, from the map's other keys. `tag` is one of
    /// [`VARIANTS`](Self::VARIANTS). Each variant is a struct with `deny_unknown_fields`.
    fn variant<'de, D: Deserializer<'de>>(tag: &str, rest: D) -> Result<Self, D::Error> {
        Self::registered(tag, Read(rest, PhantomData))
            .unwrap_or_else(|| Err(de::Error::unknown_variant(tag, Self::VARIANTS)))
    }

    /// The message for `key`, which another variant takes but `tag` does not; `takes` are the
    /// keys `tag` does take.
    fn misplaced(key: &str, tag: &str, takes: &[&str]) -> String {
        format!("`{key}` does not apply to {tag} (it takes {})", list(takes))
    }
}

/// What is done with the struct of one variant of a [`Tagged`] type `T`, given the variant's
/// constructor (from which the struct's type follows): read it, or describe it in a schema.
pub trait Registration<T> {
    /// What it gives.
    type Output;

    /// Does it for the variant `wrap` builds.
    fn variant<V: DeserializeOwned + JsonSchema>(self, wrap: fn(V) -> T) -> Self::Output;
}

/// Reads a variant's struct from the deserializer it holds.
struct Read<'de, D>(D, PhantomData<&'de ()>);

impl<'de, T, D: Deserializer<'de>> Registration<T> for Read<'de, D> {
    type Output = Result<T, D::Error>;

    fn variant<V: DeserializeOwned + JsonSchema>(self, wrap: fn(V) -> T) -> Self::Output {
        V::deserialize(self.0).map(wrap)
    }
}

/// Gives a variant's struct's schema: in place, or as a reference to its definition.
struct Describe<'g> {
    generator: &'g mut SchemaGenerator,
    inline: bool,
}

impl<T> Registration<T> for Describe<'_> {
    type Output = Schema;

    fn variant<V: DeserializeOwned + JsonSchema>(self, _: fn(V) -> T) -> Schema {
        if self.inline {
            V::json_schema(self.generator)
        } else {
            self.generator.subschema_for::<V>()
        }
    }
}

/// Each variant's tag and the schema of its struct, in the order of [`Tagged::VARIANTS`]; a
/// reference to the struct's definition, shared with wherever else the struct is used.
pub fn variant_schemas<T: Tagged>(generator: &mut SchemaGenerator) -> Vec<(&'static str, Schema)> {
    T::VARIANTS
        .iter()
        .filter_map(|tag| {
            let schema = T::registered(
                tag,
                Describe {
                    generator: &mut *generator,
                    inline: false,
                },
            )?;
            Some((*tag, schema))
        })
        .collect()
}

/// The JSON Schema of a [`Tagged`] type: one of its variants' structs, each with the tag
/// inside it (`"type": {"const": "http"}`, required), since each struct takes no other keys
/// (`additionalProperties: false`).
///
/// ```
/// # use schemars::JsonSchema;
/// # use serde::Deserialize;
/// # use self_healing::de::{Tagged, tagged_schema};
/// #[derive(Deserialize, JsonSchema)]
/// #[serde(deny_unknown_fields)]
/// struct Tcp { port: u16 }
///
/// enum Check { Tcp(Tcp) }
///
/// impl Tagged for Check {
///     const TAG: &'static str = "type";
///     self_healing::tagged_variants!(Check { "tcp" => Tcp });
/// }
///
/// let schema = tagged_schema::<Check>(&mut schemars::SchemaGenerator::default());
/// let tcp = &schema.as_value()["oneOf"][0];
/// assert_eq!(tcp["properties"]["type"]["const"], "tcp");
/// assert_eq!(tcp["required"], serde_json::json!(["port", "type"]));
/// assert_eq!(tcp["additionalProperties"], false);
/// ```
pub fn tagged_schema<T: Tagged>(generator: &mut SchemaGenerator) -> Schema {
    let variants: Vec<Value> = T::VARIANTS
        .iter()
        .filter_map(|tag| {
            let describe = Describe {
                generator: &mut *generator,
                inline: true,
            };
            let mut schema = T::registered(tag, describe)?;
            let object = schema.ensure_object();
            if let Some(Value::Object(properties)) = object.get_mut("properties") {
                properties.insert(T::TAG.to_owned(), json!({ "const": tag }));
            } else {
                object.insert("properties".to_owned(), json!({ T::TAG: { "const": tag } }));
            }
            match object.get_mut("required") {
                Some(Value::Array(required)) => required.push(json!(T::TAG)),
                _ => {
                    object.insert("required".to_owned(), json!([T::TAG]));
                }
            }
            Some(schema.to_value())
        })
        .collect();
    json_schema!({ "oneOf": variants })
}

/// `a, b, c`, or `nothing else` for no keys.
pub fn list(keys: &[&str]) -> String {
    if keys.is_empty() {
        "nothing else".to_owned()
    } else {
        keys.join(", ")
    }
}

/// The keys the variant `tag` of `T` takes, read from its derived `Deserialize`.
pub fn fields_of<T: Tagged>(tag: &str) -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::variant(tag, FieldProbe(&mut fields));
    fields
}

/// Deserializes the variant `tag` of `T` from the map `map` (after its tag, if it has one),
/// checking every key against the variant's own before the variant sees it: a key another
/// variant takes gets [`Tagged::misplaced`], any other unknown key serde's "unknown field"
/// with the variant's keys. The error is raised inside the key's value, so it carries the
/// key's path and line.
pub fn deserialize_variant<'de, T: Tagged, A: MapAccess<'de>>(
    tag: &str,
    map: A,
) -> Result<T, A::Error> {
    variant_after(tag, Vec::new(), map)
}

fn variant_after<'de, T: Tagged, A: MapAccess<'de>>(
    tag: &str,
    before: Vec<(String, serde_json::Value)>,
    map: A,
) -> Result<T, A::Error> {
    let fields = fields_of::<T>(tag);
    let misplaced = |key: &str| -> String {
        let elsewhere = T::VARIANTS
            .iter()
            .any(|other| *other != tag && fields_of::<T>(other).contains(&key));
        if elsewhere {
            T::misplaced(key, tag, fields)
        } else if fields.is_empty() {
            format!("unknown field `{key}`, there are no fields")
        } else {
            format!(
                "unknown field `{key}`, expected one of {}",
                fields
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    let rest = Rest {
        before: before.into_iter(),
        value: None,
        live: map,
        fields,
        misplaced: &misplaced,
    };
    T::variant(tag, MapAccessDeserializer::new(rest))
}

/// Deserializes a [`Tagged`] type (see the module's documentation).
pub fn deserialize_tagged<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Tagged,
{
    deserializer.deserialize_map(TaggedVisitor(PhantomData))
}

struct TaggedVisitor<T>(PhantomData<T>);

impl<'de, T: Tagged> Visitor<'de> for TaggedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a map with `{}`", T::TAG)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut before = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key != T::TAG {
                before.push((key, map.next_value::<serde_json::Value>()?));
                continue;
            }
            let tag: String = map.next_value()?;
            if !T::VARIANTS.contains(&tag.as_str()) {
                return Err(de::Error::unknown_variant(&tag, T::VARIANTS));
            }
            return variant_after::<T, A>(&tag, before, map);
        }
        Err(de::Error::missing_field(T::TAG))
    }
}

/// The map after its tag: the keys buffered before it, then the rest as the file has them,
/// each checked against the variant's keys.
struct Rest<'m, A> {
    before: std::vec::IntoIter<(String, serde_json::Value)>,
    value: Option<serde_json::Value>,
    live: A,
    fields: &'static [&'static str],
    misplaced: &'m dyn Fn(&str) -> String,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Rest<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = match self.before.next() {
            Some((key, value)) => {
                if !self.fields.contains(&key.as_str()) {
                    return Err(de::Error::custom((self.misplaced)(&key)));
                }
                self.value = Some(value);
                key
            }
            None => match self.live.next_key::<String>()? {
                None => return Ok(None),
                Some(key) if self.fields.contains(&key.as_str()) => key,
                // Raised while reading the key's value, so the error has the key's path.
                Some(key) => {
                    let refused = self.live.next_value_seed(Refuse((self.misplaced)(&key)));
                    return Err(refused
                        .err()
                        .unwrap_or_else(|| de::Error::custom("refused")));
                }
            },
        };
        let key: StringDeserializer<A::Error> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.value.take() {
            Some(value) => seed.deserialize(value).map_err(de::Error::custom),
            None => self.live.next_value_seed(seed),
        }
    }
}

/// A value that is refused with a message, whatever it is.
struct Refuse(String);

impl<'de> DeserializeSeed<'de> for Refuse {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(de::Error::custom(self.0))
    }
}

/// A deserializer that records the fields a derived struct asks for, and nothing else.
struct FieldProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("probed"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The variant `tag` of `T` from an empty map: a variant given without its settings
/// (`action: rollback` with no `config`) gets its defaults, or the error naming a key it needs.
pub fn variant_defaults<T: Tagged>(tag: &str) -> Result<T, de::value::Error> {
    let empty: de::value::MapDeserializer<'_, std::iter::Empty<((), ())>, de::value::Error> =
        de::value::MapDeserializer::new(std::iter::empty());
    T::variant(tag, empty)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Http {
        name: String,
        endpoint: String,
        expected_status: Option<u16>,
    }

    #[derive(Debug, PartialEq, Deserialize, JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Tcp {
        name: String,
        port: u16,
    }

    #[derive(Debug, PartialEq)]
    enum Check {
        Http(Http),
        Tcp(Tcp),
    }

    impl Tagged for Check {
        const TAG: &'static str = "type";
        const VARIANTS: &'static [&'static str] = &["http", "tcp"];

        fn registered<R: Registration<Self>>(tag: &str, with: R) -> Option<R::Output> {
            match tag {
                "http" => Some(with.variant(Check::Http)),
                "tcp" => Some(with.variant(Check::Tcp)),
                _ => None,
            }
        }
    }

    impl<'de> Deserialize<'de> for Check {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            deserialize_tagged(d)
        }
    }

    fn yaml(text: &str) -> Result<Vec<Check>, String> {
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_before_and_after_the_tag_reach_the_variant() {
        assert_eq!(
            yaml("- { name: api, type: http, endpoint: x, expectedStatus: 204 }\n- { type: tcp, name: db, port: 5432 }\n").unwrap(),
            [
                Check::Http(Http {
                    name: "api".into(),
                    endpoint: "x".into(),
                    expected_status: Some(204)
                }),
                Check::Tcp(Tcp {
                    name: "db".into(),
                    port: 5432
                })
            ]
        );
    }

    #[test]
    fn an_unknown_key_after_the_tag_is_located_at_its_line() {
        let error = yaml("- name: db\n  type: tcp\n  port: 1\n  prot: 2\n").unwrap_err();
        assert!(error.contains("unknown field `prot`"), "{error}");
        assert!(
            error.contains("line 4"),
            "located at the key, not the map: {error}"
        );
    }

    #[test]
    fn a_key_of_another_variant_says_so_at_its_line() {
        let error =
            yaml("- name: db\n  type: tcp\n  port: 1\n  expectedStatus: 200\n").unwrap_err();
        assert!(
            error.contains("`expectedStatus` does not apply to tcp (it takes name, port)"),
            "{error}"
        );
        assert!(error.contains("line 4"), "{error}");
        assert_eq!(
            fields_of::<Check>("http"),
            ["name", "endpoint", "expectedStatus"]
        );
    }

    #[test]
    fn a_key_before_the_tag_still_names_what_is_wrong() {
        let error = yaml("- port: x\n  name: db\n  type: tcp\n").unwrap_err();
        assert!(error.contains("invalid type"), "{error}");
        let error = yaml("- { endpoint: x, type: tcp, name: db, port: 1 }\n").unwrap_err();
        assert!(
            error.contains("`endpoint` does not apply to tcp (it takes name, port)"),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_or_missing_tag_lists_the_variants() {
        let error = yaml("- { name: a, type: ping }\n").unwrap_err();
        assert!(
            error.contains("unknown variant `ping`") && error.contains("http, tcp"),
            "{error}"
        );
        let error = yaml("- { name: a }\n").unwrap_err();
        assert!(error.contains("missing field `type`"), "{error}");
    }

    #[test]
    fn an_empty_map_names_what_a_variant_needs() {
        let error = variant_defaults::<Check>("tcp").unwrap_err();
        assert!(
            error.to_string().contains("missing field `name`"),
            "{error}"
        );
    }
}
