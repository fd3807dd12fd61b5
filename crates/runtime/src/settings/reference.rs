//! Every key a settings type knows, read from its `Deserialize`
//! implementation, so that the settings reference (`proto-docs/settings.md`)
//! can be checked against the code by a test instead of by eye.
//!
//! [`keys_of`] runs `T::deserialize` against a deserializer that answers no
//! values: a derived `Deserialize` of a struct names all its fields
//! (`deserialize_struct`), and the walk then asks for one field at a time to
//! find out whether it is a nested block (it names fields in turn) or a
//! value (anything else). Options are looked through; a list of blocks
//! (`[[ingest.api_keys]]`) is written `ingest.api_keys[].name`.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::rc::Rc;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

/// The dotted keys (`http.port`, `ingest.api_keys[].role`) of every value
/// `T` reads, sorted. Blocks are not listed themselves, only their values;
/// field aliases are listed beside the field.
pub fn keys_of<T: DeserializeOwned>() -> Vec<String> {
    let mut keys = BTreeSet::new();
    // Paths still to explore, each a list of field names from the top.
    let mut pending: Vec<Vec<&'static str>> = vec![Vec::new()];
    while let Some(plan) = pending.pop() {
        let state = Rc::new(RefCell::new(Walk::default()));
        let tracer = Tracer { plan: &plan, depth: 0, prefix: String::new(), state: state.clone() };
        // The answer is always an error or a value built from nothing: only
        // what the walk saw matters.
        let _ = T::deserialize(tracer);
        let walk = state.borrow();
        match &walk.found {
            Some((_, fields)) => {
                for field in fields {
                    let mut next = plan.clone();
                    next.push(field);
                    pending.push(next);
                }
            }
            None if !plan.is_empty() => {
                keys.insert(walk.leaf_key.clone().unwrap_or_else(|| plan.join(".")));
            }
            None => {}
        }
    }
    keys.into_iter().collect()
}

/// What one walk found at the end of its plan.
#[derive(Default)]
struct Walk {
    /// The block at the end of the plan: its key prefix and field names.
    found: Option<(String, Vec<&'static str>)>,
    /// The key of the value at the end of the plan, when it is no block.
    leaf_key: Option<String>,
}

#[derive(Debug)]
struct Stop(String);

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Self(msg.to_string())
    }
}

struct Tracer<'p> {
    plan: &'p [&'static str],
    depth: usize,
    prefix: String,
    state: Rc<RefCell<Walk>>,
}

impl Tracer<'_> {
    fn leaf(self) -> Stop {
        if self.depth == self.plan.len() {
            // A list of values is one key (`presence.channels`).
            let key = self.prefix.strip_suffix("[]").map_or(self.prefix.clone(), str::to_owned);
            self.state.borrow_mut().leaf_key = Some(key);
        }
        Stop("a value".to_owned())
    }
}

macro_rules! leaves {
    ($($method:ident),*) => {
        $(fn $method<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Stop> {
            Err(self.leaf())
        })*
    };
}

impl<'de> Deserializer<'de> for Tracer<'_> {
    type Error = Stop;

    leaves!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_unit,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any
    );

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Stop> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Stop> {
        let element = Tracer { prefix: format!("{}[]", self.prefix), ..self };
        visitor.visit_seq(OneElement(Some(element)))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _name: &'static str, _visitor: V) -> Result<V::Value, Stop> {
        Err(self.leaf())
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, Stop> {
        Err(self.leaf())
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        Err(self.leaf())
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Stop> {
        Err(self.leaf())
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Stop> {
        if self.depth == self.plan.len() {
            self.state.borrow_mut().found = Some((self.prefix.clone(), fields.to_vec()));
            return visitor.visit_map(OneField { next: None });
        }
        let field = self.plan[self.depth];
        let prefix = if self.prefix.is_empty() { field.to_owned() } else { format!("{}.{field}", self.prefix) };
        let value = Tracer { plan: self.plan, depth: self.depth + 1, prefix, state: self.state };
        visitor.visit_map(OneField { next: Some((field, value)) })
    }
}

/// A map of one field (the next step of the plan), or none.
struct OneField<'p> {
    next: Option<(&'static str, Tracer<'p>)>,
}

impl<'de> MapAccess<'de> for OneField<'_> {
    type Error = Stop;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Stop> {
        match &self.next {
            Some((field, _)) => seed.deserialize(field.into_deserializer()).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Stop> {
        match self.next.take() {
            Some((_, value)) => seed.deserialize(value),
            None => Err(Stop("no value".to_owned())),
        }
    }
}

/// A list of one element, walked like a value of the list's type.
struct OneElement<'p>(Option<Tracer<'p>>);

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Stop;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Stop> {
        match self.0.take() {
            Some(element) => seed.deserialize(element).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;
    use crate::settings::{HttpSettings, Secret, TelemetrySettings};

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Example {
        http: HttpSettings,
        #[serde(default)]
        telemetry: TelemetrySettings,
        mode: Mode,
        app: App,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Slow,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct App {
        #[serde(with = "crate::duration")]
        timeout: Duration,
        token: Option<Secret>,
        #[serde(default)]
        keys: Vec<Key>,
        #[serde(default)]
        nested: Option<Nested>,
        #[serde(default)]
        ports: Vec<u16>,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Key {
        name: String,
        key: Secret,
    }

    #[allow(dead_code)]
    #[derive(Deserialize)]
    struct Nested {
        depth: u32,
    }

    #[test]
    fn lists_every_value_of_every_block() {
        let keys = keys_of::<Example>();
        for expected in [
            "http.host",
            "http.port",
            "telemetry.log_format",
            "telemetry.log_level",
            "telemetry.otlp_endpoint",
            "mode",
            "app.timeout",
            "app.token",
            "app.keys[].name",
            "app.keys[].key",
            "app.nested.depth",
            "app.ports",
        ] {
            assert!(keys.contains(&expected.to_owned()), "{expected} missing from {keys:?}");
        }
        assert!(!keys.iter().any(|k| k == "app" || k == "http" || k == "app.keys"), "blocks are not values: {keys:?}");
    }
}
