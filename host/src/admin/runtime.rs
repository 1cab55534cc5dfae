//! `GET /runtime` in Envoy's shape: every key of `layered_runtime`'s layers (nested maps of a
//! static layer as dotted keys) with its value in each layer (`""` where the layer lacks it)
//! and its final value (the last layer that has it wins), and the layers' names. weir reads
//! its keys from the static layers (see `config::runtime`); the admin layer stays empty.

use serde_json::{Map, Value, json};

/// Most keys listed, so a hostile config cannot make the answer unbounded.
const MAX_KEYS: usize = 10_000;

/// The `/runtime` answer for the config `dump` (the file as JSON).
pub fn dump(config: &Value) -> Value {
    let layers: Vec<&Value> = match config.pointer("/layered_runtime/layers") {
        Some(Value::Array(layers)) => layers.iter().collect(),
        // A repeated field written as one object (see `config::lenient`).
        Some(single @ Value::Object(_)) => vec![single],
        _ => Vec::new(),
    };
    let names: Vec<Value> = layers
        .iter()
        .map(|layer| layer.get("name").cloned().unwrap_or(json!("")))
        .collect();
    // Keys in the order they first appear, each with its value per layer.
    let mut keys: Vec<(String, Vec<String>)> = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let mut flat = Vec::new();
        if let Some(Value::Object(values)) = layer.get("static_layer") {
            flatten("", values, &mut flat);
        }
        for (key, value) in flat {
            let slot = match keys.iter().position(|(k, _)| *k == key) {
                Some(slot) => slot,
                None if keys.len() < MAX_KEYS => {
                    keys.push((key, vec![String::new(); layers.len()]));
                    keys.len() - 1
                }
                None => continue,
            };
            keys[slot].1[i] = value;
        }
    }
    let mut entries = Map::new();
    for (key, values) in keys {
        let final_value = values
            .iter()
            .rev()
            .find(|v| !v.is_empty())
            .cloned()
            .unwrap_or_default();
        entries.insert(
            key,
            json!({"final_value": final_value, "layer_values": values}),
        );
    }
    json!({"entries": entries, "layers": names})
}

/// The leaves of `values` as (dotted key, value as Envoy prints it).
fn flatten(prefix: &str, values: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (key, value) in values {
        if out.len() >= MAX_KEYS {
            return;
        }
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Object(inner) => flatten(&key, inner, out),
            Value::String(text) => out.push((key, text.clone())),
            Value::Null => out.push((key, String::new())),
            other => out.push((key, other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_flattened_and_later_layers_win() {
        let config = json!({"layered_runtime": {"layers": [
            {"name": "static", "static_layer": {
                "overload": {"global_downstream_max_connections": 1000},
                "http.max_requests_per_io_cycle": 5,
            }},
            {"name": "override", "static_layer": {"http.max_requests_per_io_cycle": "7"}},
            {"name": "admin", "admin_layer": {}},
        ]}});
        let dump = dump(&config);
        assert_eq!(dump["layers"], json!(["static", "override", "admin"]));
        assert_eq!(
            dump["entries"]["overload.global_downstream_max_connections"],
            json!({"final_value": "1000", "layer_values": ["1000", "", ""]})
        );
        assert_eq!(
            dump["entries"]["http.max_requests_per_io_cycle"],
            json!({"final_value": "7", "layer_values": ["5", "7", ""]})
        );
        assert_eq!(
            super::dump(&json!({})),
            json!({"entries": {}, "layers": []})
        );
    }
}
