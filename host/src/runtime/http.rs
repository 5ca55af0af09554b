//! `wasi:http` for the handlers whose language runtime imports it (the
//! JavaScript runtimes link `fetch` to it): the types work, so a runtime
//! that builds requests or headers at start still starts, and every request
//! is refused with `HTTP-request-denied` before anything leaves the table.
//! A handler reaches the network only through the sinks it is granted.

use std::future::Future;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_http::p2::bindings::http::types::ErrorCode;
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::HostState;

/// The version wasmtime-wasi-http defines `wasi:http` at; guests of any 0.2
/// version link to it.
const WASI_HTTP: &str = "0.2.12";

/// The largest headers a guest may build, in bytes of their in-memory form:
/// host memory outside the handler's cap, kept small.
const FIELD_SIZE_LIMIT: usize = 16 * 1024;

/// The `wasi:http` part of a handler's store.
pub struct HttpState {
    ctx: WasiHttpCtx,
    hooks: DenyAll,
}

impl Default for HttpState {
    fn default() -> Self {
        let mut ctx = WasiHttpCtx::new();
        ctx.set_field_size_limit(FIELD_SIZE_LIMIT);
        HttpState { ctx, hooks: DenyAll }
    }
}

/// Hooks that send nothing. [`link`] refuses requests before they reach a
/// hook; this one stands behind it.
struct DenyAll;

type Sent = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;

impl WasiHttpHooks for DenyAll {
    fn send_request(
        &mut self,
        _request: ::http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Sent,
    ) -> Box<dyn Future<Output = wasmtime_wasi_http::Result<(::http::Response<WasiBody>, Sent)>> + Send> {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}

/// Links `wasi:http/types` and an `outgoing-handler` whose `handle` drops
/// the request and answers `HTTP-request-denied`.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    linker
        .instance(&format!("wasi:http/outgoing-handler@{WASI_HTTP}"))?
        .func_wrap(
            "handle",
            |mut cx: StoreContextMut<'_, HostState>,
             (request, options): (Resource<HostOutgoingRequest>, Option<Resource<RequestOptions>>)| {
                let table = &mut cx.data_mut().table;
                table.delete(request)?;
                if let Some(options) = options {
                    table.delete(options)?;
                }
                let denied: Result<Resource<HostFutureIncomingResponse>, ErrorCode> = Err(ErrorCode::HttpRequestDenied);
                Ok((denied,))
            },
        )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `handle` is shadowed in the instance wasmtime-wasi-http defines: with
    /// shadowing off, defining it again there is refused.
    #[test]
    fn the_shadowed_handle_is_the_one_wasmtime_wasi_http_defines() {
        let engine = wasmtime::Engine::default();
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).unwrap();
        let mut instance = linker
            .instance(&format!("wasi:http/outgoing-handler@{WASI_HTTP}"))
            .unwrap();
        let again = instance.func_wrap("handle", |_: StoreContextMut<'_, HostState>, (): ()| Ok(()));
        assert!(again.is_err(), "wasi:http is not defined at {WASI_HTTP}");
    }
}
