/// Reads and checks the config file at `path`.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    load_str(&text, &path.display().to_string())
}

/// Reads and checks config `text`; `file` names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<Config, ConfigError> {
    yaml_limits::check(text).map_err(|e| e.in_file(file))?;
    let bootstrap = parse(text).map_err(|e| e.in_file(file))?;
    let dump =
        serde_yaml_ng::from_str::<serde_json::Value>(text).unwrap_or(serde_json::Value::Null);
    bootstrap::build(bootstrap, file, dump).map_err(|e| e.in_file(file))
}
