//! Ordered JSON for response bodies: objects keep the field order they are
//! built with, as the real APIs send them (`serde_json::Value` sorts keys in
//! this workspace).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Value;

/// A JSON value whose objects keep insertion order.
#[derive(Clone, Debug, PartialEq)]
pub enum J {
    /// Any plain value (objects inside it are serialised as serde_json orders them).
    Val(Value),
    /// An array.
    Arr(Vec<J>),
    /// An object, in field order.
    Obj(Vec<(String, J)>),
}

/// `null`.
pub const NULL: J = J::Val(Value::Null);

impl J {
    /// Remove a field of an object (no-op otherwise).
    pub fn remove(&mut self, key: &str) {
        if let J::Obj(fields) = self {
            fields.retain(|(k, _)| k != key);
        }
    }

    /// Set a field of an object: replaced in place if present, else appended.
    pub fn set(&mut self, key: &str, value: impl Into<J>) {
        if let J::Obj(fields) = self {
            let value = value.into();
            match fields.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => slot.1 = value,
                None => fields.push((key.to_string(), value)),
            }
        }
    }

    /// Compact JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl Serialize for J {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            J::Val(v) => v.serialize(serializer),
            J::Arr(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            J::Obj(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl From<Value> for J {
    fn from(v: Value) -> J {
        J::Val(v)
    }
}
impl From<&Value> for J {
    fn from(v: &Value) -> J {
        J::Val(v.clone())
    }
}
impl From<&str> for J {
    fn from(v: &str) -> J {
        J::Val(Value::String(v.to_string()))
    }
}
impl From<String> for J {
    fn from(v: String) -> J {
        J::Val(Value::String(v))
    }
}
impl From<&String> for J {
    fn from(v: &String) -> J {
        J::Val(Value::String(v.clone()))
    }
}
impl From<bool> for J {
    fn from(v: bool) -> J {
        J::Val(Value::Bool(v))
    }
}
impl From<u64> for J {
    fn from(v: u64) -> J {
        J::Val(Value::from(v))
    }
}
impl From<usize> for J {
    fn from(v: usize) -> J {
        J::Val(Value::from(v))
    }
}
impl From<f64> for J {
    fn from(v: f64) -> J {
        J::Val(Value::from(v))
    }
}
impl From<Vec<J>> for J {
    fn from(v: Vec<J>) -> J {
        J::Arr(v)
    }
}
impl<T: Into<J>> From<Option<T>> for J {
    fn from(v: Option<T>) -> J {
        v.map_or(NULL, Into::into)
    }
}

/// An ordered object: `obj! { "a": 1u64, "b": "x" }`.
macro_rules! obj {
    ($($k:literal : $v:expr),* $(,)?) => {
        $crate::sim::wire::J::Obj(vec![$(($k.to_string(), $crate::sim::wire::J::from($v))),*])
    };
}

/// An array: `arr![a, b]`.
macro_rules! arr {
    ($($v:expr),* $(,)?) => {
        $crate::sim::wire::J::Arr(vec![$($crate::sim::wire::J::from($v)),*])
    };
}

pub(crate) use arr;
pub(crate) use obj;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn keeps_order() {
        let mut o = obj! {"z": 1u64, "a": arr![NULL, "x"], "m": obj!{"y": true, "b": Some(2u64)}};
        assert_eq!(
            o.to_json(),
            r#"{"z":1,"a":[null,"x"],"m":{"y":true,"b":2}}"#
        );
        o.remove("a");
        o.set("z", "q");
        o.set("n", None::<u64>);
        assert_eq!(o.to_json(), r#"{"z":"q","m":{"y":true,"b":2},"n":null}"#);
    }
}
