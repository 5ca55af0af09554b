# Building a rowhook handler written in C as a WebAssembly component.
#
# A handler's Makefile sets RH_SDK to this directory and includes this file;
# then RH_BUILD compiles C sources and the bindings in gen/ for wasm32-wasi
# (WASI preview 1, reactor: no main) and links them into a component:
#
#     RH_SDK := ../../../guest-sdk/c
#     include $(RH_SDK)/rowhook.mk
#
#     my_handler.wasm: my_handler.c
#     	$(RH_BUILD) -o $@ my_handler.c
#
# What it needs: Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32
# (the compiler's wasm32 builtins), and wasm-component-ld, which comes with
# the Rust toolchain: it runs wasm-ld, then turns the core module into a
# component, with the WASI preview 1 adapter of its own release inside and
# the world that gen/handler_component_type.o describes.

RH_SDK ?= $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

RH_CC ?= clang
RH_CFLAGS ?= -O2 -Wall -Wextra
# Where wasm-ld and wasm-component-ld are: the first wasm-ld on PATH, and
# the one of the Rust toolchain of this directory.
RH_WASM_LD ?= $(shell command -v wasm-ld || command -v wasm-ld-14)
RH_COMPONENT_LD ?= $(shell rustc --print sysroot)/lib/rustlib/$(shell rustc -vV | sed -n 's/^host: //p')/bin/wasm-component-ld

RH_TARGET_FLAGS = --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor
# clang 14 takes an absolute path as -fuse-ld; the options after -Wl, go to
# wasm-component-ld, which passes the rest on to wasm-ld.
RH_LINK_FLAGS = -fuse-ld=$(RH_COMPONENT_LD) -Wl,--wasi-adapter=reactor,--wasm-ld-path=$(RH_WASM_LD)
RH_BINDINGS = $(RH_SDK)/gen/handler.c $(RH_SDK)/gen/handler_component_type.o

RH_BUILD = $(RH_CC) $(RH_TARGET_FLAGS) $(RH_CFLAGS) -I$(RH_SDK) $(RH_LINK_FLAGS) $(RH_BINDINGS)
