//! Prints one inventory scan: `cargo run -p inventory --example inventory_dump`.
fn main() {
    let mut s = inventory::Scanner::new(inventory::InventoryConfig::new("inventory_dump"));
    let snap = s.scan();
    for (i, e) in snap.live_entries() {
        let r = &e.reference;
        println!(
            "{i}: {} {} id={} veth={}({}) netns={} nsid={} macs={:02x?} ips={:?}",
            e.runtime,
            r.name_str(),
            r.id_str(),
            r.veth_str(),
            e.veth_ifindex,
            r.netns,
            r.nsid,
            e.macs,
            e.ips
        );
    }
}
