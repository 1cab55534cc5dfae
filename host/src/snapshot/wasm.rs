/// Loads the plugin of one Wasm filter (HTTP or network; the config has the same shape) whose
/// `typed_config` is at `typed_path`: its module is read, compiled and started once, so a
/// module that fails is a config error naming the field. A module with remote code is only
/// checked here and left pending: [`crate::wasm::remote::resolve`] fetches it once the
/// clusters (`clusters` are their names) exist.
pub(super) fn load_plugin(
    wasm_config: &WasmFilterConfig,
    typed_path: &str,
    clusters: &[&str],
    node: &wasm_spec::NodeInfo,
) -> Result<std::sync::Arc<crate::wasm::PluginHandle>, FieldError> {
    let spec = plugin_spec(wasm_config, typed_path, node)?;
    if let Some(remote) = remote_code(wasm_config, typed_path, clusters)? {
        return Ok(crate::wasm::PluginHandle::remote(spec, remote));
    }
    let source = spec.source.clone();
    let code_hash = <sha2::Sha256 as sha2::Digest>::digest(&spec.code).into();
    let plugin = crate::wasm::Plugin::load(spec)
        .map_err(|e| FieldError::new(format!("{typed_path}.config.vm_config.code.local"), e))?;
    Ok(crate::wasm::PluginHandle::new(plugin, source, code_hash))
}
