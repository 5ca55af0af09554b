//! A WASI command component: a valid component of the wrong world.

fn main() {
    println!("not a handler");
}
