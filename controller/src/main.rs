//! Entry point of the etcd controller.
fn main() {
    eprintln!("etcd-controller: not yet implemented");
    std::process::exit(2);
}
