//! The raw host functions a proxy-wasm module imports, one file per area. Each reads its
//! arguments from the module's memory (bounds-checked, see [`super::memory`]), acts on the
//! [`HostState`] and returns a [`weir_abi::Status`]; none of them traps on bad input.
//!
//! [`link`] defines them all, the 0.1.0 names and WASI under both module names, then defines
//! any other function the module imports as a stub returning `Unimplemented` (WASI: `ENOSYS`),
//! so every module links.

mod buffers;
mod headers;
mod http_call;
mod metrics;
mod misc;
mod properties;
mod shared;
mod wasi;

use super::WasmError;
use super::state::HostState;
use std::collections::HashSet;
use wasmtime::{ExternType, IntoFunc, Linker, Module, Val, ValType};

/// Encodes a header map in the wire format (for properties that are maps).
pub fn encode_map(pairs: &crate::wasm::context::HeaderPairs) -> Result<Vec<u8>, weir_abi::Status> {
    headers::encode_pairs(pairs)
}

/// Defines functions in a linker and remembers which, for the stubs.
pub struct Registrar<'a> {
    linker: &'a mut Linker<HostState>,
    defined: HashSet<(String, String)>,
    error: Option<String>,
}

impl Registrar<'_> {
    /// Defines `module.name` as `func`.
    pub fn func<Params, Args>(
        &mut self,
        module: &str,
        name: &str,
        func: impl IntoFunc<HostState, Params, Args>,
    ) {
        if let Err(error) = self.linker.func_wrap(module, name, func) {
            self.error
                .get_or_insert_with(|| format!("{module}.{name}: {error}"));
        }
        self.defined.insert((module.to_string(), name.to_string()));
    }

    /// Defines `env.name`.
    pub fn env<Params, Args>(&mut self, name: &str, func: impl IntoFunc<HostState, Params, Args>) {
        self.func(weir_abi::names::IMPORT_MODULE, name, func);
    }
}

/// A linker with every host function, and stubs for the other imports of `module`.
pub fn link(module: &Module) -> Result<Linker<HostState>, WasmError> {
    let mut linker = Linker::new(module.engine());
    let mut registrar = Registrar {
        linker: &mut linker,
        defined: HashSet::new(),
        error: None,
    };
    misc::add(&mut registrar);
    headers::add(&mut registrar);
    buffers::add(&mut registrar);
    properties::add(&mut registrar);
    shared::add(&mut registrar);
    http_call::add(&mut registrar);
    metrics::add(&mut registrar);
    for wasi_module in wasi::MODULES {
        wasi::add(&mut registrar, wasi_module);
    }
    if let Some(error) = registrar.error {
        return Err(WasmError::Instantiate(error));
    }
    let defined = registrar.defined;
    for import in module.imports() {
        let key = (import.module().to_string(), import.name().to_string());
        if defined.contains(&key) {
            continue;
        }
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let unsupported: i32 = if wasi::MODULES.contains(&import.module()) {
            wasi::ENOSYS
        } else {
            weir_abi::Status::Unimplemented.as_i32()
        };
        let name = format!("{}.{}", import.module(), import.name());
        let result_types: Vec<ValType> = ty.results().collect();
        linker
            .func_new(import.module(), import.name(), ty, move |_, _, results| {
                tracing::debug!(import = %name, "call to an unsupported host function");
                for (slot, ty) in results.iter_mut().zip(&result_types) {
                    *slot = match ty {
                        ValType::I32 => Val::I32(unsupported),
                        ValType::I64 => Val::I64(0),
                        ValType::F32 => Val::F32(0),
                        ValType::F64 => Val::F64(0),
                        _ => Val::null_func_ref(),
                    };
                }
                Ok(())
            })
            .map_err(|e| WasmError::Instantiate(e.to_string()))?;
    }
    Ok(linker)
}
