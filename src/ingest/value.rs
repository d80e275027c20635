//! OTLP `AnyValue` -> model [`AttributeValue`].
//!
//! The model keeps OpenTelemetry's typed scalars and homogeneous arrays of
//! them. Everything else becomes a `String`, so no attribute is lost:
//!
//! | OTLP value | stored as |
//! |---|---|
//! | string, bool, int, double | `String`, `Bool`, `Int`, `Double` |
//! | array of only strings / bools / ints / doubles | `StringArray`, `BoolArray`, `IntArray`, `DoubleArray` |
//! | empty array | `StringArray(vec![])` |
//! | bytes | `String`: standard base64 with padding (as OTLP/JSON writes bytes) |
//! | key-value list | `String`: a JSON object (keys sorted; the first of duplicate keys wins) |
//! | array mixing types, or holding arrays, lists, bytes or empty values | `String`: a JSON array |
//! | empty value (no field set) | the attribute is dropped |
//!
//! Inside the JSON of a list or array, strings, bools and ints are JSON
//! values, doubles are JSON numbers (`"NaN"`, `"Infinity"`, `"-Infinity"`
//! as strings, as in the protobuf JSON mapping), bytes are base64 strings
//! and empty values are `null`.

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as ProtoKeyValue};

use crate::model::{AttributeValue, KeyValue};

/// Converts OTLP attributes, dropping those without a value.
pub(crate) fn attributes(attrs: Vec<ProtoKeyValue>) -> Vec<KeyValue> {
    attrs
        .into_iter()
        .filter_map(|kv| {
            let value = attribute_value(kv.value?.value?)?;
            Some(KeyValue { key: kv.key, value })
        })
        .collect()
}

/// Converts one OTLP value; `None` for a value the model cannot hold at all.
fn attribute_value(value: Value) -> Option<AttributeValue> {
    Some(match value {
        Value::StringValue(s) => AttributeValue::String(s),
        Value::BoolValue(b) => AttributeValue::Bool(b),
        Value::IntValue(i) => AttributeValue::Int(i),
        Value::DoubleValue(d) => AttributeValue::Double(d),
        Value::BytesValue(b) => AttributeValue::String(base64(&b)),
        Value::ArrayValue(a) => array(a.values),
        kv @ Value::KvlistValue(_) => AttributeValue::String(json(Some(&kv)).to_string()),
        strindex @ Value::StringValueStrindex(_) => {
            AttributeValue::String(json(Some(&strindex)).to_string())
        }
    })
}

/// A homogeneous array of scalars becomes a typed array, anything else JSON.
fn array(values: Vec<AnyValue>) -> AttributeValue {
    let first = values.first().and_then(|v| v.value.as_ref());
    macro_rules! homogeneous {
        ($variant:ident, $target:ident) => {{
            let mut out = Vec::with_capacity(values.len());
            for v in &values {
                match &v.value {
                    Some(Value::$variant(x)) => out.push(x.clone()),
                    _ => return as_json_array(&values),
                }
            }
            AttributeValue::$target(out)
        }};
    }
    match first {
        None if values.is_empty() => AttributeValue::StringArray(Vec::new()),
        Some(Value::StringValue(_)) => homogeneous!(StringValue, StringArray),
        Some(Value::BoolValue(_)) => homogeneous!(BoolValue, BoolArray),
        Some(Value::IntValue(_)) => homogeneous!(IntValue, IntArray),
        Some(Value::DoubleValue(_)) => homogeneous!(DoubleValue, DoubleArray),
        _ => as_json_array(&values),
    }
}

fn as_json_array(values: &[AnyValue]) -> AttributeValue {
    let items = values.iter().map(|v| json(v.value.as_ref())).collect();
    AttributeValue::String(serde_json::Value::Array(items).to_string())
}

/// The JSON rendering used for values the model has no type for.
fn json(value: Option<&Value>) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => double_json(*d),
        Some(Value::BytesValue(b)) => J::String(base64(b)),
        Some(Value::ArrayValue(a)) => {
            J::Array(a.values.iter().map(|v| json(v.value.as_ref())).collect())
        }
        Some(Value::KvlistValue(kv)) => {
            let mut map = serde_json::Map::new();
            for item in &kv.values {
                if !map.contains_key(&item.key) {
                    let v = json(item.value.as_ref().and_then(|v| v.value.as_ref()));
                    map.insert(item.key.clone(), v);
                }
            }
            J::Object(map)
        }
        Some(Value::StringValueStrindex(i)) => {
            let mut map = serde_json::Map::new();
            map.insert("stringValueStrindex".to_owned(), J::from(*i));
            J::Object(map)
        }
    }
}

/// A double as JSON: a number when finite, else the protobuf JSON mapping's strings.
pub(crate) fn double_json(d: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(d) {
        Some(n) => serde_json::Value::Number(n),
        None if d.is_nan() => serde_json::Value::String("NaN".to_owned()),
        None if d > 0.0 => serde_json::Value::String("Infinity".to_owned()),
        None => serde_json::Value::String("-Infinity".to_owned()),
    }
}

/// Standard base64 with padding (RFC 4648), as the protobuf JSON mapping writes bytes.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let sextet = ((n >> shift) & 0x3f) as usize;
                out.push(char::from(ALPHABET.get(sextet).copied().unwrap_or(b'=')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes base64 as the protobuf JSON mapping reads `bytes`: the standard
/// or the URL-safe alphabet, with or without `=` padding. `None` when `s`
/// is not base64 (another character, a misplaced `=`, or a lone last
/// character). Spare bits in the last character are ignored, as most
/// decoders do.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let body = match bytes {
        [rest @ .., b'=', b'='] if rest.len() % 4 == 2 => rest,
        [rest @ .., b'='] if rest.len() % 4 == 3 => rest,
        _ => bytes,
    };
    if body.len() % 4 == 1 {
        return None;
    }
    // Exactly the decoded length: 6 bits a character, whole bytes.
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};

    fn any(v: Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    fn kv(key: &str, v: Option<Value>) -> ProtoKeyValue {
        ProtoKeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: v }),
            ..Default::default()
        }
    }

    fn one(v: Value) -> AttributeValue {
        let mut out = attributes(vec![kv("k", Some(v))]);
        assert_eq!(out.len(), 1);
        out.remove(0).value
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected, "{input:?}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
        for (input, expected) in cases {
            assert_eq!(base64_decode(expected).as_deref(), Some(input.as_bytes()));
        }
    }

    #[test]
    fn base64_decoding_takes_both_alphabets_with_or_without_padding() {
        let bytes = [0xfbu8, 0xff, 0xbf, 0x00, 0x10];
        for text in ["+/+/ABA=", "-_-_ABA=", "+/+/ABA", "-_-_ABA", "+_-/ABA"] {
            assert_eq!(base64_decode(text).as_deref(), Some(&bytes[..]), "{text}");
        }
        // Spare bits in the last character are ignored ("Zh" = "Zg" = "f").
        assert_eq!(base64_decode("Zh==").as_deref(), Some(&b"f"[..]));
        for bad in [
            "Z", "Zg=", "Z===", "=", "Zg==Zg==", "Zm9v!", "Zm 9v", "Zm9v\n", "Zg=A",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn base64_decoding_inverts_encoding(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let text = base64(&bytes);
            proptest::prop_assert_eq!(base64_decode(&text), Some(bytes.clone()));
            let unpadded = text.trim_end_matches('=');
            proptest::prop_assert_eq!(base64_decode(unpadded), Some(bytes.clone()));
            let url: String = text.chars().map(|c| match c { '+' => '-', '/' => '_', c => c }).collect();
            proptest::prop_assert_eq!(base64_decode(&url), Some(bytes));
        }
    }

    #[test]
    fn scalars_keep_their_type() {
        assert_eq!(
            one(Value::StringValue("x".into())),
            AttributeValue::String("x".into())
        );
        assert_eq!(one(Value::BoolValue(true)), AttributeValue::Bool(true));
        assert_eq!(one(Value::IntValue(-7)), AttributeValue::Int(-7));
        assert_eq!(one(Value::DoubleValue(0.5)), AttributeValue::Double(0.5));
        assert_eq!(
            one(Value::BytesValue(vec![0, 1, 2])),
            AttributeValue::String("AAEC".into())
        );
    }

    #[test]
    fn homogeneous_arrays_are_typed_and_others_json() {
        let arr = |vals: Vec<Value>| {
            Value::ArrayValue(ArrayValue {
                values: vals.into_iter().map(any).collect(),
            })
        };
        assert_eq!(
            one(arr(vec![Value::IntValue(1), Value::IntValue(2)])),
            AttributeValue::IntArray(vec![1, 2])
        );
        assert_eq!(
            one(arr(vec![Value::StringValue("a".into())])),
            AttributeValue::StringArray(vec!["a".into()])
        );
        assert_eq!(
            one(arr(vec![Value::BoolValue(false)])),
            AttributeValue::BoolArray(vec![false])
        );
        match one(arr(vec![
            Value::DoubleValue(1.5),
            Value::DoubleValue(f64::NAN),
        ])) {
            AttributeValue::DoubleArray(v) => assert!(v[0] == 1.5 && v[1].is_nan()),
            other => panic!("expected a double array, got {other:?}"),
        }
        assert_eq!(one(arr(vec![])), AttributeValue::StringArray(vec![]));
        assert_eq!(
            one(arr(vec![Value::IntValue(1), Value::DoubleValue(2.5)])),
            AttributeValue::String("[1,2.5]".into())
        );
        assert_eq!(
            one(arr(vec![
                Value::StringValue("a".into()),
                Value::BytesValue(vec![255]),
                Value::DoubleValue(f64::INFINITY),
            ])),
            AttributeValue::String(r#"["a","/w==","Infinity"]"#.into())
        );
        let with_empty = Value::ArrayValue(ArrayValue {
            values: vec![any(Value::IntValue(1)), AnyValue { value: None }],
        });
        assert_eq!(one(with_empty), AttributeValue::String("[1,null]".into()));
    }

    #[test]
    fn kvlists_become_json_objects_first_duplicate_wins() {
        let list = Value::KvlistValue(KeyValueList {
            values: vec![
                kv("b", Some(Value::IntValue(2))),
                kv("a", Some(Value::StringValue("x".into()))),
                kv("b", Some(Value::IntValue(3))),
                kv(
                    "nested",
                    Some(Value::KvlistValue(KeyValueList {
                        values: vec![kv("n", None)],
                    })),
                ),
            ],
        });
        assert_eq!(
            one(list),
            AttributeValue::String(r#"{"a":"x","b":2,"nested":{"n":null}}"#.into())
        );
    }

    #[test]
    fn empty_values_are_dropped() {
        let out = attributes(vec![
            kv("empty", None),
            ProtoKeyValue {
                key: "missing".into(),
                value: None,
                ..Default::default()
            },
            kv("kept", Some(Value::IntValue(1))),
        ]);
        assert_eq!(out, vec![KeyValue::new("kept", 1i64)]);
    }
}
